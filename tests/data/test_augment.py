import io
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from simclr_hpc.data import augment
from simclr_hpc.data.augment import EvalTransform, SimCLRViews, SupervisedAugment
from simclr_hpc.data.blur import gaussian_blur
from simclr_hpc.data.colour import MEAN, STD, colour_matrix
from simclr_hpc.data.decode import decode_for_boxes, open_image


def _image(h=40, w=48, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_simclr_views_shape_and_determinism():
    t = SimCLRViews(32, "cifar", 0.5)
    img = _image()
    a = t(img, random.Random(1))
    b = t(img, random.Random(1))
    c = t(img, random.Random(2))
    assert len(a) == 2 and a[0].shape == (3, 32, 32) and a[0].dtype == torch.float32
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])


def test_grayscale_input_becomes_three_channels():
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), "L")
    for t in (SimCLRViews(24), SupervisedAugment(24), EvalTransform(24)):
        out = t(gray, random.Random(0))
        out = out[0] if isinstance(out, tuple) else out
        assert out.shape == (3, 24, 24)


def test_eval_transform_is_deterministic_centre_crop():
    img = _image(64, 80)
    out = EvalTransform(32)(img)
    assert out.shape == (3, 32, 32) and torch.equal(out, EvalTransform(32)(img))
    same = _image(32, 32)
    expected = (same.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert torch.allclose(EvalTransform(32)(same), expected, atol=1e-5)


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_colour_matrix_matches_torchvision_jitter_ops(op, monkeypatch):
    # With mid-range pixels nothing clips, so the composed affine map must equal torchvision's op exactly.
    img = torch.from_numpy(np.random.default_rng(0).integers(90, 160, (3, 16, 16), dtype=np.uint8)).float() / 255

    factor = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.4}[op]

    class Fixed(random.Random):
        """Jitter on, grayscale off; the one op under test gets ``factor``, the others 1 (identity), hue 0."""

        calls = []

        def random(self):
            return 0.0 if not self.calls else 0.99

        def uniform(self, a, b):
            name = ("brightness", "contrast", "saturation", "hue")[len(self.calls)]
            self.calls.append(name)
            return factor if name == op else 0.0 if name == "hue" else 1.0

    Fixed.calls = []
    a, t = colour_matrix(Fixed(), 1.0, img.mean(dim=(1, 2)).double().numpy())
    ours = torch.einsum("ij,jhw->ihw", torch.from_numpy(a).float(), img) + torch.from_numpy(t).float()[:, None, None]
    theirs = getattr(TF, f"adjust_{op}")(img, factor)
    assert torch.allclose(ours, theirs, atol=2e-3)


def test_separable_blur_equals_torchvision_blur():
    x = torch.rand(3, 40, 40) * 255
    assert torch.allclose(gaussian_blur(x, 5, 1.3), TF.gaussian_blur(x, [5, 5], [1.3, 1.3]), atol=1e-3)


def test_jpeg_is_decoded_at_reduced_size_when_crops_allow():
    rng = np.random.default_rng(0)
    big = np.clip(np.cumsum(rng.normal(0, 6, (480, 640, 3)), axis=1) % 256, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=90)
    full, boxes = decode_for_boxes(open_image(buf.getvalue()), [(0, 0, 480, 480)], 100)
    assert tuple(full.shape) == (3, 120, 160) and boxes == [(0, 0, 120, 120)]  # 1/4 keeps the crop >= 100 px, 1/8 not
    full, _ = decode_for_boxes(open_image(buf.getvalue()), [(0, 0, 100, 100)], 100)
    assert tuple(full.shape) == (3, 480, 640)  # a small crop needs the full decode
    views = SimCLRViews(96, "imagenet", 1.0)(open_image(buf.getvalue()), random.Random(0))
    assert views[0].shape == (3, 96, 96) and torch.isfinite(views[0]).all()


def test_supervised_augment_outputs_normalised_tensor():
    out = SupervisedAugment(32)(_image(), random.Random(0))
    assert out.shape == (3, 32, 32) and -3 < float(out.min()) and float(out.max()) < 3


def _device_path(transform, images, seed):
    """Worker half per image (as the loader runs it), then the batched device half, on the CPU here."""
    parts = [transform(img, random.Random(seed + i)) for i, img in enumerate(images)]
    n = transform.n_views
    assert all(p[v].dtype == torch.uint8 and p[n + v].shape == (augment.N_PARAMS,) for p in parts for v in range(n))
    return [
        augment.finish_on_device(torch.stack([p[v] for p in parts]), torch.stack([p[n + v] for p in parts]))
        for v in range(n)
    ]


def test_device_path_gives_the_cpu_path_views_cifar_preset():
    images = [_image(40, 48, seed) for seed in range(16)]
    cpu = SimCLRViews(32, "cifar", 1.0)
    dev = _device_path(SimCLRViews(32, "cifar", 1.0, on_device=True), images, seed=100)
    for v in range(2):
        ref = torch.stack([cpu(img, random.Random(100 + i))[v] for i, img in enumerate(images)])
        torch.testing.assert_close(dev[v], ref, rtol=0, atol=1e-5)


def test_device_path_blurs_per_sample_like_the_cpu_path_imagenet_preset():
    images = [_image(64, 64, seed) for seed in range(24)]
    cpu = SimCLRViews(48, "imagenet", 1.0)
    dev_t = SimCLRViews(48, "imagenet", 1.0, on_device=True)
    dev = _device_path(dev_t, images, seed=7)
    sigmas = torch.stack([dev_t(img, random.Random(7 + i))[2][12] for i, img in enumerate(images)])
    blurred = sigmas > 0
    assert 0 < int(blurred.sum()) < len(images)  # both kinds are in the batch: one kernel per sample
    ref = torch.stack([cpu(img, random.Random(7 + i))[0] for i, img in enumerate(images)])
    torch.testing.assert_close(dev[0][~blurred], ref[~blurred], rtol=0, atol=1e-5)
    # Blurred views: the same blur; only the contrast's grey level comes from the crop before the blur, not after.
    diff = (dev[0][blurred] - ref[blurred]).abs()
    assert diff.mean() < 2e-3 and diff.max() < 0.05, (diff.mean(), diff.max())


def _batched_and_per_image(preset, crop_min_scale, n=16, size=28, seed=0):
    """The views of ``n`` images by SimCLRBatchViews (stacked, finished) and by SimCLRViews with the same rng seeds."""
    images = [_image(size, size, seed=seed + i) for i in range(n)]
    batched = augment.SimCLRBatchViews(size, (size, size), preset, 1.0, crop_min_scale=crop_min_scale)
    per_image = SimCLRViews(size, preset, 1.0, crop_min_scale=crop_min_scale)
    samples = [batched(img, random.Random(i)) for i, img in enumerate(images)]
    views = batched.finish_batch(torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]))
    reference = [per_image(img, random.Random(i)) for i, img in enumerate(images)]
    return views, tuple(torch.stack([r[v] for r in reference]) for v in range(2))


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_batched_views_equal_per_image_views_when_the_crop_is_the_whole_image(preset):
    # crop_min_scale=1: every box is the whole image, so no interpolation can differ; flips, blur (imagenet), colour
    # and normalisation must then give the per-image path's views, drawn from the same random numbers.
    views, reference = _batched_and_per_image(preset, crop_min_scale=1.0)
    for got, want in zip(views, reference):
        assert got.shape == want.shape == (16, 3, 28, 28) and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_batched_views_with_random_crops_differ_from_per_image_views_only_by_interpolation():
    # Same boxes, flips and colours. roi_align neither rounds to uint8 nor clamps at the crop's edge (it reads the
    # pixels just outside the crop), so on noise images the outermost output pixels differ; 2 px inside the border
    # only rounding remains (measured: mean 0.004, max 0.1 in normalised units, pixel std 1.2). A wrong box, flip or
    # colour map differs by about 1 everywhere.
    views, reference = _batched_and_per_image("cifar", crop_min_scale=0.3, n=32)
    inner = torch.cat([(g - w)[..., 2:-2, 2:-2].abs().flatten() for g, w in zip(views, reference)])
    assert inner.mean() < 0.01 and inner.max() < 0.25, (inner.mean(), inner.max())
    whole = torch.cat([(g - w).abs().flatten() for g, w in zip(views, reference)])
    assert whole.mean() < 0.03, whole.mean()


def test_batched_views_refuse_an_image_of_another_size():
    with pytest.raises(ValueError, match="index.json says every image is 28x28"):
        augment.SimCLRBatchViews(28, (28, 28))(_image(32, 32), random.Random(0))


def test_flip_probability_mirrors_every_view_or_none_and_moves_no_other_draw():
    # data.flip: at 1 every view is the mirror image of the view drawn at 0 from the same random numbers (the same
    # crop and colour: the draw is made whatever the probability), in each of the three augmentation paths.
    img = _image(28, 28)
    for make in (
        lambda p: SimCLRViews(24, "cifar", 0.5, crop_min_scale=0.3, flip=p),
        lambda p: SupervisedAugment(24, flip=p),
    ):
        never, always = make(0.0)(img, random.Random(3)), make(1.0)(img, random.Random(3))
        for kept, mirrored in zip(
            never if isinstance(never, tuple) else [never], always if isinstance(always, tuple) else [always]
        ):
            assert torch.allclose(mirrored, kept.flip(-1), atol=1e-5)
            assert not torch.allclose(mirrored, kept, atol=1e-2)
    images = [_image(28, 28, seed) for seed in range(8)]
    params = {
        p: torch.stack(
            [augment.SimCLRBatchViews(28, (28, 28), flip=p)(im, random.Random(i))[1] for i, im in enumerate(images)]
        )
        for p in (0.0, 1.0)
    }
    assert (augment.layout.VIEW.get(params[0.0], "flip") == 0).all() and (
        augment.layout.VIEW.get(params[1.0], "flip") == 1
    ).all()
    other = [c for c in range(augment.layout.VIEW.width) if c != augment.layout.VIEW.slices["flip"].start]
    assert torch.equal(params[0.0][..., other], params[1.0][..., other])
