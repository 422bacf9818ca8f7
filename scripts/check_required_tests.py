"""Fail CI when a test that must run here (markers `slurm` or `dist`) was skipped, or when nothing ran.

Reads pytest's JUnit XML. Marker names are recorded as properties by tests/conftest.py.
"""

import sys
import xml.etree.ElementTree as ET

MUST_RUN = {"slurm", "dist"}


def main(path: str) -> int:
    tree = ET.parse(path)
    ran = skipped_required = 0
    bad = []
    for case in tree.iter("testcase"):
        markers = {p.get("value") for p in case.iter("property") if p.get("name") == "marker"}
        skipped = case.find("skipped") is not None
        if not skipped:
            ran += 1
        if skipped and markers & MUST_RUN:
            skipped_required += 1
            bad.append(f"{case.get('classname')}::{case.get('name')} ({', '.join(sorted(markers & MUST_RUN))})")
    if ran == 0:
        print("CI: no test ran")
        return 1
    if bad:
        print(f"CI: {skipped_required} test(s) that must run here were skipped:")
        for line in bad:
            print(f"  {line}")
        return 1
    print(f"CI: {ran} tests ran; no slurm or dist test was skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
