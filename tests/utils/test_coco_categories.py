"""COCO's 80 categories against torchvision's COCO weights metadata (91 slots: background, 80 names, 10 N/A)."""

from __future__ import annotations

from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

from od2.utils.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES


def test_names_and_ids_are_torchvisions_coco_slots():
    slots = RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    assert [slots[cid] for cid in COCO_CATEGORY_IDS] == list(COCO_CLASS_NAMES)
    assert sorted(set(range(91)) - set(COCO_CATEGORY_IDS)) == [i for i, n in enumerate(slots)
                                                               if n in ("__background__", "N/A")]


def test_eighty_ascending_ids():
    assert len(COCO_CLASS_NAMES) == len(set(COCO_CLASS_NAMES)) == 80
    assert list(COCO_CATEGORY_IDS) == sorted(set(COCO_CATEGORY_IDS)) and COCO_CATEGORY_IDS[-1] == 90
