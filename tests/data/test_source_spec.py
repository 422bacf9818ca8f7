"""One grammar of dataset sources: the opener and the study check parse a spec the same way, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simclr_hpc.data.source_spec import GRAMMAR, KINDS, SourceSpecError, parse_source, source_num_classes
from simclr_hpc.data.sources import OPENERS, DataError, open_source
from simclr_hpc.study.schema import StudyError
from simclr_hpc.study.spec import parse_study
from tests.study.helpers import study_dict


def test_every_kind_of_the_grammar_has_exactly_one_opener():
    assert set(OPENERS) == set(KINDS)
    assert GRAMMAR.split() == [
        "cifar10:ROOT",
        "cifar100:ROOT",
        "stl10:ROOT",
        "imagefolder:DIR",
        "npz:FILE",
        "mnist5k",
        "shapes[:K[:N[:SIZE[:SEED]]]]",
        "unlabeled:DIR",
    ]


def test_parse_source_fills_shapes_defaults_and_keeps_paths():
    assert parse_source("cifar10:/data/c10").path == "/data/c10"
    assert parse_source("imagefolder:/a:b").path == "/a:b"  # only the first ':' separates kind and path
    assert parse_source("shapes:12:100").shapes_fields(seed=7) == (12, 100, 32, 7)
    assert parse_source("shapes").shapes_fields(seed=0) == (10, 500, 32, 0)


@pytest.mark.parametrize(
    "spec", ["imagenet:/x", "cifar10", "mnist5k:/x", "shapes:ten", "shapes:1", "shapes:4:1:4", "shapes:4:5:32:1:9"]
)
def test_a_bad_spec_is_the_same_one_line_for_the_opener_and_the_study(spec):
    with pytest.raises(SourceSpecError) as parsed:
        parse_source(spec)
    with pytest.raises(DataError) as opened:
        open_source(spec)
    assert opened.value.lines == [str(parsed.value)]
    assert source_num_classes(spec) == (None, str(parsed.value))
    data = study_dict()
    data["datasets"]["sh4"]["source"] = spec
    with pytest.raises(StudyError) as studied:
        parse_study(data, "s.yaml")
    assert f"s.yaml: datasets.sh4.source: {parsed.value}" in studied.value.lines


def test_grammar_and_index_reader_import_no_torch():
    code = (
        "import sys, simclr_hpc.data.source_spec, simclr_hpc.data.index, simclr_hpc.study.spec, simclr_hpc.study.plan;"
        "print(sorted(m for m in ('torch', 'webdataset') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_imagefolder_classes_are_counted_under_train_when_it_has_a_train_tree(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / split / cls).mkdir(parents=True)
    assert source_num_classes(f"imagefolder:{tmp_path}") == (3, None)  # not 2 (train, test)
    assert source_num_classes(f"imagefolder:{tmp_path / 'train'}") == (3, None)
