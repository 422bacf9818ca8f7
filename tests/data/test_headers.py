"""The header parser agrees with PIL on format, mode and size, and the fast tar header with tarfile's."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from simclr_hpc.data.headers import cut_short, read_header
from simclr_hpc.data.shard_writer import ustar_header


@pytest.mark.parametrize(
    "fmt,mode,kwargs",
    [
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("JPEG", "RGB", {"progressive": True}),
        ("PNG", "RGB", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("PNG", "RGBA", {}),
    ],
)
def test_read_header_agrees_with_pil(fmt, mode, kwargs):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (23, 41, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    data = buf.getvalue()
    header = read_header(data)
    with Image.open(io.BytesIO(data)) as pil:
        assert (header.format, header.mode, header.height, header.width) == (pil.format, pil.mode, 23, 41)
    assert not cut_short(header, data) and cut_short(header, data[: len(data) // 2])
    assert read_header(b"GIF89a" + data[6:]) is None


def test_ustar_header_is_tarfiles():
    for name, size in [("train-0000001.cls", 1), ("x" * 100, 123456789), ("test-0000000.jpg", 0)]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o644, "", ""
        assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    with pytest.raises(ValueError):
        ustar_header("y" * 101, 1)
