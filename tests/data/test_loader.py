"""Tests of od2.data.image_io, od2.data.samplers and od2.data.loader on small synthetic images."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from od2.data.image_io import ImagePixelLimitError, ImageReadError, ImageSizeError, read_image
from od2.data.loader import DetectionDataset, build_test_loader, build_train_loader, collate_batch
from od2.data.samplers import TrainBatchSampler
from od2.data.transforms import Compose, ResizeShortestEdge, Sample


def make_records(root: Path, sizes: list[tuple[int, int]], fmt: str = "png") -> list[dict]:
    """One image per (H, W) with a white box at [w/4, h/4, w/2, h/2] and a crowd box on every third image."""
    rng = np.random.default_rng(0)
    records = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = root / f"img{i}.{fmt}"
        Image.fromarray(image).save(path)
        boxes = np.array([[w / 4, h / 4, w / 2, h / 2], [0, 0, w / 8, h / 8]], dtype=np.float32)
        crowd = np.array([False, i % 3 == 0])
        records.append(
            dict(
                file_name=str(path),
                image_id=100 + i,
                height=h,
                width=w,
                boxes=boxes,
                labels=np.array([i % 2, 2], dtype=np.int64),
                iscrowd=crowd,
            )
        )
    return records


def mixed_sizes(n: int) -> list[tuple[int, int]]:
    """Landscape, portrait and square (H, W), irregularly mixed."""
    shapes = [(40, 60), (60, 40), (48, 48), (36, 64), (64, 36)]
    return [shapes[(i * 7 + i // 3) % len(shapes)] for i in range(n)]


def fake_records(sizes: list[tuple[int, int]]) -> list[dict]:
    """Records for sampler tests: only height and width are read."""
    return [dict(height=h, width=w) for h, w in sizes]


# ----------------------------------------------------------------------------------------------------- image_io


def test_read_image_formats(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.bmp")  # not a torchvision format: PIL fallback
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((7, 9), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)

    for name in ("a.png", "a.bmp", "rgba.png"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
        np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.repeat(rgb[..., :1], 3, axis=2))
    jpeg = read_image(str(tmp_path / "a.jpg"), expected_size=(7, 9))
    with Image.open(tmp_path / "a.jpg") as im:  # libjpeg versions may differ by a level or two
        assert np.abs(jpeg.astype(int) - np.asarray(im)).max() <= 3


def test_read_image_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(path)


@pytest.mark.parametrize("content", ["random", "truncated", "empty"])
def test_read_image_corrupt_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.jpg"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    elif content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="bad.jpg") as info:
        read_image(path)
    assert info.value.path == str(path) and info.value.reason
    assert isinstance(info.value, OSError)


def test_read_image_refuses_a_decompression_bomb_from_its_header(bad_images: dict[str, Path]) -> None:
    # The 50000x50000 PNG would take 7.5 GB decoded; the limit is read from the header, so this test allocates none.
    with pytest.raises(ImagePixelLimitError, match=r"bomb\.png.*50000x50000 = 2500000000 pixels.*89478485") as info:
        read_image(bad_images["bomb"])
    assert isinstance(info.value, ImageReadError)
    with pytest.raises(ImagePixelLimitError, match="7x9 = 63 pixels.*62"):
        Image.new("RGB", (7, 9)).save(bad_images["bomb"].with_name("small.png"))
        read_image(bad_images["bomb"].with_name("small.png"), max_pixels=62)
    assert read_image(bad_images["bomb"].with_name("small.png"), max_pixels=63).shape == (9, 7, 3)


def test_read_image_reason_is_whole(tmp_path: Path) -> None:
    # torchvision's own message starts with its source location; the reason after it must arrive uncut
    # ("Out of bound read in decode_png. Probably, the input image is corrupted", not its last clause).
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "decode_png. Probably, the input image is corrupted" in info.value.reason
    assert ".cpp" not in info.value.reason


def test_read_image_size_mismatch(tmp_path: Path) -> None:
    Image.new("RGB", (9, 7)).save(tmp_path / "a.png")
    with pytest.raises(ImageSizeError, match=r"a\.png.*\(7, 9\).*\(9, 7\)"):
        read_image(tmp_path / "a.png", expected_size=(9, 7))


# ------------------------------------------------------------------------------------------------------ sampler


def take(sampler: TrainBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(sampler, n))


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("group", [True, False])
def test_sampler_start_iter_resumes_the_stream(world_size: int, group: bool) -> None:
    records = fake_records(mixed_sizes(11))
    for rank in range(world_size):
        kwargs = dict(batch_size=3, seed=5, rank=rank, world_size=world_size, group_by_aspect_ratio=group)
        full = take(TrainBatchSampler(records, **kwargs), 40)
        for k in (1, 2, 5, 13, 27):
            assert take(TrainBatchSampler(records, start_iter=k, **kwargs), 40 - k) == full[k:]


def reference_stream(sizes, batch_size, seed, rank, world_size, group, num_batches) -> list[list[tuple[int, int]]]:
    """The stream as documented in od2.data.samplers, one draw at a time."""
    n_records = len(sizes)
    per_rank = -(-n_records // world_size)
    buckets: dict[bool, list] = {False: [], True: []}
    out, epoch = [], 0
    while len(out) < num_batches:
        perm = np.random.default_rng([seed, 0, epoch]).permutation(n_records)
        for i in range(per_rank):
            index = int(perm[(i * world_size + rank) % n_records])
            h, w = sizes[index]
            bucket = buckets[group and w < h]
            bucket.append(((epoch * per_rank + i) * world_size + rank, index))
            if len(bucket) == batch_size:
                out.append(list(bucket))
                bucket.clear()
        epoch += 1
    return out[:num_batches]


@pytest.mark.parametrize(
    ("num_records", "batch_size", "world_size", "group"),
    [(11, 3, 1, True), (11, 3, 2, True), (10, 4, 3, True), (2, 3, 1, True), (13, 2, 2, False)],
)
def test_sampler_matches_reference_stream(num_records, batch_size, world_size, group) -> None:
    sizes = mixed_sizes(num_records)
    for rank in range(world_size):
        sampler = TrainBatchSampler(fake_records(sizes), batch_size, 3, rank, world_size, group_by_aspect_ratio=group)
        assert take(sampler, 30) == reference_stream(sizes, batch_size, 3, rank, world_size, group, 30)


def test_sampler_groups_by_aspect_ratio_and_covers_all_records() -> None:
    sizes = mixed_sizes(23)
    records = fake_records(sizes)
    batches = take(TrainBatchSampler(records, batch_size=4, seed=1), 60)
    for batch in batches:
        assert len(batch) == 4
        assert len({sizes[i][1] >= sizes[i][0] for _, i in batch}) == 1
    draws = [n for batch in batches for n, _ in batch]
    assert len(set(draws)) == len(draws)
    # Draws are numbered by stream position: those of epoch 0 are 0..22 and hold every record once.
    epoch0 = sorted((n, i) for batch in batches for n, i in batch if n < 23)
    assert [n for n, _ in epoch0] == list(range(23))
    assert sorted(i for _, i in epoch0) == list(range(23))


@pytest.mark.parametrize("num_records", [12, 11])
def test_sampler_ranks_get_disjoint_shards(num_records: int) -> None:
    records = fake_records(mixed_sizes(num_records))
    per_rank = -(-num_records // 2)  # 6: the shorter shard is padded by wrapping the permutation
    shards = []
    for rank in range(2):
        sampler = TrainBatchSampler(records, batch_size=3, seed=9, rank=rank, world_size=2, group_by_aspect_ratio=False)
        epoch0 = [d for batch in take(sampler, per_rank // 3) for d in batch]
        assert len(epoch0) == per_rank
        shards.append(epoch0)
    draws = [n for shard in shards for n, _ in shard]
    assert sorted(draws) == list(range(2 * per_rank))
    indices = [i for shard in shards for _, i in shard]
    assert set(indices) == set(range(num_records))
    assert len(indices) - len(set(indices)) == 2 * per_rank - num_records


def test_sampler_seeds_and_epochs_differ() -> None:
    records = fake_records(mixed_sizes(20))
    a = take(TrainBatchSampler(records, batch_size=2, seed=0, group_by_aspect_ratio=False), 20)
    b = take(TrainBatchSampler(records, batch_size=2, seed=1, group_by_aspect_ratio=False), 20)
    assert [i for batch in a for _, i in batch] != [i for batch in b for _, i in batch]
    order = [i for batch in a for _, i in batch]
    assert order[:20] != order[20:] and sorted(order[:20]) == sorted(order[20:]) == list(range(20))


# ------------------------------------------------------------------------------------------------------ dataset


def test_training_items_drop_crowd_and_keep_negatives(tmp_path: Path) -> None:
    records = make_records(tmp_path, [(40, 60), (60, 40)])
    records[1] = dict(records[1], boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                      iscrowd=np.zeros(0, bool))  # fmt: skip
    dataset = DetectionDataset(records, Compose([ResizeShortestEdge((20,), 1000)]), is_train=True, seed=0)
    crowded = dataset[(0, 0)]  # record 0 has a crowd box
    assert crowded["image"].shape == (3, 20, 30) and crowded["image"].dtype == torch.uint8
    torch.testing.assert_close(crowded["boxes"], torch.tensor([[7.5, 5.0, 15.0, 10.0]]))
    assert crowded["labels"].tolist() == [0]
    assert crowded["image_id"] == 100 and crowded["orig_size"] == (40, 60) and crowded["image_size"] == (20, 30)
    negative = dataset[(1, 1)]
    assert negative["boxes"].shape == (0, 4) and negative["boxes"].dtype == torch.float32
    assert negative["labels"].shape == (0,) and negative["labels"].dtype == torch.int64
    with pytest.raises(TypeError, match="TrainBatchSampler"):
        dataset[0]
    keep_crowd = DetectionDataset(records, Compose([]), is_train=True, seed=0, skip_crowd=False)
    assert keep_crowd[(0, 0)]["labels"].tolist() == [0, 2]


def test_dataset_names_bad_files(tmp_path: Path) -> None:
    records = make_records(tmp_path, [(40, 60)])
    dataset = DetectionDataset(records, Compose([]), is_train=False)
    Path(records[0]["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match="img0.png"):
        dataset[0]


# ------------------------------------------------------------------------------------------------------ collate


def test_collate_pads_to_divisibility() -> None:
    items = [
        dict(image=torch.full((3, 50, 70), 1, dtype=torch.uint8), boxes=torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
             labels=torch.tensor([5]), image_id=1, orig_size=(100, 140), image_size=(50, 70)),
        dict(image=torch.full((65, 40, 3), 2, dtype=torch.uint8).permute(2, 0, 1),  # channels-last strides
             boxes=torch.zeros((0, 4)), labels=torch.zeros(0, dtype=torch.int64), image_id=2,
             orig_size=(65, 40), image_size=(65, 40)),
    ]  # fmt: skip
    batch = collate_batch(items, size_divisibility=32)
    assert set(batch) == {"images", "image_sizes", "boxes", "labels", "image_ids", "orig_sizes"}
    assert batch["images"].shape == (2, 3, 96, 96) and batch["images"].dtype == torch.uint8
    assert batch["image_sizes"].dtype == torch.int64 and batch["image_sizes"].tolist() == [[50, 70], [65, 40]]
    assert batch["orig_sizes"].dtype == torch.int64 and batch["orig_sizes"].tolist() == [[100, 140], [65, 40]]
    assert batch["image_ids"] == [1, 2]
    assert batch["boxes"][1].shape == (0, 4) and batch["labels"][1].shape == (0,)
    for i, (h, w) in enumerate(batch["image_sizes"].tolist()):
        assert (batch["images"][i, :, :h, :w] == i + 1).all()
        assert batch["images"][i].sum() == (i + 1) * 3 * h * w  # zeros everywhere else
    assert collate_batch(items, size_divisibility=1)["images"].shape == (2, 3, 65, 70)
    assert collate_batch(items[:1], size_divisibility=32)["images"].shape == (1, 3, 64, 96)


# ------------------------------------------------------------------------------------------------------ loaders


def batch_fingerprint(batch: dict) -> tuple:
    return (
        batch["image_ids"],
        batch["image_sizes"].tolist(),
        batch["images"].sum(dim=(1, 2, 3)).tolist(),
        [b.tolist() for b in batch["boxes"]],
        [lab.tolist() for lab in batch["labels"]],
    )


def train_fingerprints(records: list[dict], num_batches: int, **kwargs) -> list[tuple]:
    args = dict(min_sizes=(24, 32, 40), max_size=64, flip_prob=0.5, batch_size=2, num_workers=0, seed=0)
    loader = build_train_loader(records, **{**args, **kwargs})
    return [batch_fingerprint(b) for b in itertools.islice(loader, num_batches)]


@pytest.fixture(scope="module")
def train_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return make_records(tmp_path_factory.mktemp("train"), mixed_sizes(10), fmt="jpg")


def test_train_loader_is_deterministic_across_worker_counts(train_records: list[dict]) -> None:
    torch.manual_seed(0)
    expected_global = torch.rand(1)
    torch.manual_seed(0)
    serial = train_fingerprints(train_records, 8)
    assert torch.rand(1) == expected_global  # the loader did not consume the global torch RNG
    assert train_fingerprints(train_records, 8, num_workers=2) == serial
    assert train_fingerprints(train_records, 8, seed=1) != serial
    # Several scales and both flips occurred, so the comparison above covered the augmentation.
    assert len({tuple(s) for fp in serial for s in fp[1]}) > 2


def test_train_loader_start_iter(train_records: list[dict]) -> None:
    full = train_fingerprints(train_records, 9, world_size=2, rank=1)
    assert train_fingerprints(train_records, 4, world_size=2, rank=1, start_iter=5) == full[5:]


def test_train_batches_follow_the_contract(train_records: list[dict]) -> None:
    loader = build_train_loader(train_records, min_sizes=(24,), max_size=64, flip_prob=0.5, batch_size=3,
                                num_workers=0, seed=0, size_divisibility=16)  # fmt: skip
    for batch in itertools.islice(loader, 5):
        images, sizes = batch["images"], batch["image_sizes"]
        assert images.shape[0] == 3 and images.shape[2] % 16 == 0 and images.shape[3] % 16 == 0
        for i, (h, w) in enumerate(sizes.tolist()):
            boxes = batch["boxes"][i]
            assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
            assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            if (batch["image_ids"][i] - 100) % 3 == 0:  # its label-2 box is a crowd box
                assert 2 not in batch["labels"][i].tolist()


def test_test_loader_shards_sequentially_without_augmentation(train_records: list[dict]) -> None:
    loader = build_test_loader(train_records, min_size=32, max_size=64, batch_size=2, num_workers=0,
                               rank=1, world_size=3)  # fmt: skip
    batches = list(loader)
    assert [i for b in batches for i in b["image_ids"]] == [r["image_id"] for r in train_records[1::3]]
    first = batches[0]
    record = train_records[1]
    h, w = first["image_sizes"][0].tolist()
    assert min(h, w) == 32 and first["orig_sizes"][0].tolist() == [record["height"], record["width"]]
    reference = Compose([ResizeShortestEdge((32,), 64)])
    sample = Sample(read_image(record["file_name"]), record["boxes"], record["labels"])
    expected = reference(sample, np.random.default_rng(0))
    expected_image = torch.from_numpy(np.array(expected.image)).permute(2, 0, 1)
    torch.testing.assert_close(first["images"][0, :, :h, :w], expected_image)
    torch.testing.assert_close(first["boxes"][0], torch.from_numpy(expected.boxes))
    assert first["labels"][0].tolist() == [1, 2]  # crowd box kept at test time


# ------------------------------------------------------------------------------------------------- bad images


def test_training_skips_an_image_that_fails_to_decode_the_same_way_every_time(train_records: list[dict],
                                                                              tmp_path: Path) -> None:
    records = [dict(r) for r in train_records]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(records[3]["file_name"]).read_bytes()[:200])  # passed the check once, truncated since
    records[3]["file_name"] = str(broken)
    dataset = DetectionDataset(records, Compose([]), is_train=True, seed=0)
    item = dataset[(7, 3)]
    assert item["image_id"] != records[3]["image_id"] and item["skipped_images"] == [str(broken)]
    assert dataset[(7, 3)]["image_id"] == item["image_id"]  # a resume draws the same replacement
    assert dataset[(8, 3)]["skipped_images"] == [str(broken)]
    assert "skipped_images" not in dataset[(7, 0)] or dataset[(7, 0)]["skipped_images"] == []

    serial = train_fingerprints(records, 8)
    assert train_fingerprints(records, 8, num_workers=2) == serial
    assert train_fingerprints(records, 4, start_iter=4) == serial[4:]
    loader = build_train_loader(records, min_sizes=(24,), max_size=64, flip_prob=0.5, batch_size=2, num_workers=0,
                                seed=0)  # fmt: skip
    skipped = [path for batch in itertools.islice(loader, 10) for path in batch["skipped_images"]]
    assert skipped and set(skipped) == {str(broken)}
    strict = DetectionDataset(records, Compose([]), is_train=True, seed=0, bad_images="error")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        strict[(7, 3)]


def test_evaluation_loader_skips_an_image_that_fails_to_decode(train_records: list[dict], tmp_path: Path) -> None:
    records = [dict(r) for r in train_records[:5]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    records[1]["file_name"] = str(broken)
    loader = build_test_loader(records, min_size=24, max_size=64, batch_size=2, num_workers=0)
    batches = list(loader)
    assert [b["image_ids"] for b in batches] == [[100], [102, 103], [104]]
    assert batches[0]["images"].shape[0] == 1 and batches[0]["orig_sizes"].shape == (1, 2)
    [skip] = batches[0]["skipped_images"]
    assert skip["image_id"] == 101 and skip["file_name"] == str(broken) and "not an image" in skip["reason"]
    assert all(b["skipped_images"] == [] for b in batches[1:])
    only_bad = list(build_test_loader(records[1:2], min_size=24, max_size=64, num_workers=0))
    assert only_bad[0]["images"].shape[0] == 0 and only_bad[0]["image_ids"] == []
    with pytest.raises(ImageReadError, match="broken.jpg"):
        list(build_test_loader(records, min_size=24, max_size=64, num_workers=0, bad_images="error"))


def test_loaders_apply_the_pixel_limit(train_records: list[dict]) -> None:
    records = [dict(r) for r in train_records[:3]]
    loader = build_test_loader(records, min_size=24, max_size=64, num_workers=0, max_pixels=40 * 60 - 1)
    skipped = [s["image_id"] for b in loader for s in b["skipped_images"]]
    assert skipped == [r["image_id"] for r in records if r["height"] * r["width"] > 40 * 60 - 1]


def test_read_image_odd_modes_match_pil_rgb(tmp_path: Path) -> None:
    """CMYK JPEGs and palette PNGs decode as PIL's own RGB conversion; 16-bit greyscale keeps its top 8 bits."""
    rgb = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    for name in ("cmyk.jpg", "palette.png"):
        with Image.open(tmp_path / name) as im:
            reference = np.asarray(im.convert("RGB"))
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (7, 9, 3), name
        assert np.abs(out.astype(int) - reference).max() <= 3, name  # libjpeg versions may differ by a level
    deep = (np.arange(63, dtype=np.uint16).reshape(7, 9) * 1000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode == "I;16"
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=2))
