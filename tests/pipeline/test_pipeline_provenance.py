"""``metrics.json`` records what computed it: versions, device, threads, per-stage precision, the weights' SHA-256."""

import subprocess
from importlib import metadata

import monai
import numpy as np
import torch

from monai_vmorph.networks import VoxelMorph
from monai_vmorph.pipeline.provenance import provenance, sha256_of

# FIPS 180-2, appendix B.1: SHA-256("abc")
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha256_is_the_published_digest_and_follows_a_changed_file(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"abc")
    assert sha256_of(path) == ABC_SHA256
    path.write_bytes(b"abcd")  # another size: the cache must not answer the old digest
    assert sha256_of(path) == "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"


def test_provenance_records_versions_threads_and_the_precision_each_stage_ran_in(tmp_path):
    net = VoxelMorph(spatial_dims=2, precision="fp32")
    weights = tmp_path / "model.pt"
    torch.save(net.state_dict(), weights)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        record = provenance(net, weights, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert record["threads"] == 1 and record["device"] == "cpu"
    assert record["torch"] == torch.__version__ and record["monai"] == monai.__version__
    assert record["numpy"] == np.__version__ and record["package"] == metadata.version("monai-vmorph")
    assert record["precision"]["network_backbone"] == "float32" and record["precision"]["refine"] == "float32"
    net.precision = "bf16"
    assert provenance(net.double(), weights, "cpu")["precision"]["network_backbone"] == "bfloat16"
    assert provenance(net, weights, "cpu")["precision"]["network"] == "float64"
    digest = subprocess.run(["sha256sum", str(weights)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert record["weights_sha256"] == digest and record["weights"] == str(weights)


def test_a_model_without_a_weights_file_has_no_digest_instead_of_failing():
    record = provenance(VoxelMorph(spatial_dims=2), "<trained in memory>", "cpu")
    assert record["weights_sha256"] is None and record["weights"] == "<trained in memory>"
