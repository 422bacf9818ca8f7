"""A distillation student never starts from the weights its teacher was fine-tuned from."""

import pytest
import yaml

from simclr_hpc import rundir
from simclr_hpc.config import ConfigError
from simclr_hpc.train.stages.distill import check_not_teachers_weights


def test_a_student_from_its_teachers_encoder_or_the_teacher_itself_is_refused(tmp_path):
    teacher, encoder, other = tmp_path / "finetune" / "t", tmp_path / "pretrain" / "r18-s0", tmp_path / "pretrain" / "x"
    teacher.mkdir(parents=True)
    rundir.config_path(teacher).write_text(yaml.safe_dump({"finetune": {"encoder": str(encoder)}}))
    for same in (encoder, teacher, tmp_path / "pretrain" / ".." / "pretrain" / "r18-s0"):
        with pytest.raises(ConfigError, match="distill.student_init: .* the teacher .* was fine-tuned from"):
            check_not_teachers_weights(str(teacher), str(same))
    check_not_teachers_weights(str(teacher), str(other))  # another seed's encoder: allowed
    check_not_teachers_weights(str(teacher), "")  # random init
    check_not_teachers_weights("", str(encoder))  # the labels-only baseline has no teacher
