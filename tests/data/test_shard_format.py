"""Shards are webdataset's own TarWriter output, and the webdataset-based reader names every way a tar can be cut."""

import tarfile

import pytest

from simclr_hpc.data.shards import TruncatedShard, iter_tar_samples, read_index, write_shards


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    out = tmp_path_factory.mktemp("fmt") / "s"
    write_shards("shapes:2:4:8", out, shard_size=6, seed=0)
    return out / read_index(out).split("train").shards[0].name


def test_members_carry_fixed_metadata_in_webdataset_order(one_shard):
    with tarfile.open(one_shard) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
    # TarWriter writes a sample's members in sorted extension order
    assert [m.name.partition(".")[2] for m in members[:2]] == ["cls", "png"]


def test_reader_yields_exactly_the_whole_samples_at_every_cut_point(one_shard, tmp_path):
    data = one_shard.read_bytes()
    with tarfile.open(one_shard) as tar:
        members = tar.getmembers()
    keys = list(dict.fromkeys(m.name.partition(".")[0] for m in members))
    first_end = {}  # key -> byte where its first member's data ends
    for m in members:
        first_end.setdefault(m.name.partition(".")[0], m.offset_data + m.size)
    archive_end = members[-1].offset_data + members[-1].size
    archive_end += -archive_end % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE  # padding, then two zero blocks
    cut_file = tmp_path / "cut.tar"
    for cut in range(0, len(data) + 1, 11):
        cut_file.write_bytes(data[:cut])
        got, error = [], None
        try:
            got = [k for k, _ in iter_tar_samples(cut_file)]
        except TruncatedShard as exc:
            error = exc
        # a sample is whole once the next key's first member has been read, or once the archive's end marker is there
        whole = [k for k, nxt in zip(keys, keys[1:]) if first_end[nxt] <= cut]
        if cut >= archive_end:
            assert error is None and got == keys, cut
        else:
            assert error is not None, cut
            assert error.after == (whole[-1] if whole else None), cut
