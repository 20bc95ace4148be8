import pytest
import torch
from monai.bundle import ConfigParser

from monai_vmorph.pipeline import default_bundle


def _weights(ndim, path, scale):
    """The bundle's network with randomly perturbed weights, so the field is smooth but not zero."""
    parser = ConfigParser()
    parser.read_config(str(default_bundle(ndim) / "configs" / "inference.json"))
    parser["bundle_root"] = str(default_bundle(ndim))
    net = parser.get_parsed_content("network_def")
    torch.manual_seed(ndim)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def weights_3d(tmp_path_factory):
    return _weights(3, tmp_path_factory.mktemp("w3") / "model.pt", 0.05)


@pytest.fixture(scope="session")
def weights_2d(tmp_path_factory):
    return _weights(2, tmp_path_factory.mktemp("w2") / "model.pt", 0.02)


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` -> (exit status, stdout, stderr) of the command line run in this process."""
    from monai_vmorph.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def no_registration(monkeypatch):
    """Any registration the command line starts fails the test: for checks that must come before the work."""
    import monai_vmorph.cli.register as register_module

    def refuse(*args, **kwargs):
        raise AssertionError("a registration started before the inputs were checked")

    monkeypatch.setattr(register_module, "register_pair", refuse)
