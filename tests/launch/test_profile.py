"""Site profiles: the shipped ones load, every field is checked, hostile values are refused."""

from __future__ import annotations

import pytest

from simclr_hpc.config import UserError
from simclr_hpc.launch import LaunchError, Profile, list_profiles, load_profile, parse_time_min


def test_shipped_profiles_load_with_their_documented_values():
    local = load_profile("local")
    assert (local.partition, local.gpus_per_node, local.array_parallelism) == ("debug", 1, 2)
    site = load_profile("example-site")
    assert site.gpus_per_node == 4 and site.time_min == 24 * 60 and site.env["NCCL_IB_HCA"] == "mlx5"
    assert {"local", "example-site"} <= set(list_profiles())


@pytest.mark.parametrize(
    "text,minutes", [("90", 90), ("1:30:00", 90), ("5:30", 6), ("1-00:00:00", 1440), ("2-3", 51 * 60), ("0-00:01", 1)]
)
def test_slurm_time_formats_become_minutes(text, minutes):
    assert parse_time_min(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1h", "-5", "0", "1:2:3:4", "$(id)"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(ValueError):
        parse_time_min(text)


@pytest.mark.parametrize(
    "field,value",
    [
        ("partition", "gpu;rm -rf ~"),
        ("partition", "$(id)"),
        ("account", "a`id`"),
        ("qos", "q\nx"),
        ("partition", "../etc"),
        ("constraint", "a100&$(id)"),
        ("constraint", "a b"),
        ("image", "/x/img.sif\n#SBATCH -N 9"),
        ("binds", ["/data\n/x"]),
        ("binds", ["relative:/x"]),
        ("binds", ["/a,/b"]),
        ("env", {"BAD-NAME": "1"}),
        ("env", {"X": "a\nexport Y=1"}),
        ("env", {"$(id)": "1"}),
        ("setup", ["module load x\nrm -rf /"]),
        ("mail_type", "END;id"),
        ("mail_user", "me@x; id"),
        ("time", "1-00:00:00; id"),
        ("gpus_per_node", -1),
        ("image", "/runs/%j/img.sif"),
    ],
)
def test_hostile_or_invalid_profile_fields_are_refused(tmp_path, field, value):
    import yaml

    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({field: value}))
    with pytest.raises(LaunchError) as err:
        load_profile(str(path))
    assert len(err.value.lines) == 1 and field in err.value.lines[0]


def test_unknown_profile_key_names_the_key(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("partitoin: gpu\n")
    with pytest.raises(LaunchError, match="partitoin: unknown key"):
        load_profile(str(path))


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(LaunchError, match="known: .*example-site"):
        load_profile("no-such-site")


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a b", "$(id)"])
def test_profile_names_cannot_leave_the_profile_directory(name):
    with pytest.raises(UserError):
        load_profile(name)


def test_env_values_with_shell_characters_are_kept_as_data():
    prof = Profile(env={"NCCL_SOCKET_IFNAME": "^lo,docker0", "X": "$(touch /tmp/pwned) `id`; 'q'"})
    assert prof.env["X"] == "$(touch /tmp/pwned) `id`; 'q'"
