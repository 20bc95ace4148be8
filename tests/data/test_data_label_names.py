"""Label names from a Learn2Reg dataset JSON and the report columns named by them."""

import json

from monai_vmorph.data import label_column_names, learn2reg_label_names


def test_label_names(tmp_path):
    (tmp_path / "x_dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "CSF", "3": "white matter"}})
    )
    names = learn2reg_label_names(tmp_path)
    assert names == {0: "background", 1: "CSF", 3: "white matter"}
    assert label_column_names([1, 2, 3], names, "dice") == ["dice_CSF", "dice_2", "dice_white_matter"]
    assert label_column_names([1, 2], {1: "A", 2: "A"}, "dice") == ["dice_A_1", "dice_A_2"]
    assert learn2reg_label_names(tmp_path / "missing") == {} and learn2reg_label_names(None) == {}
