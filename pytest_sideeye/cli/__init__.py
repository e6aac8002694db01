"""Stage 7, the `sideeye` command (main.py: snapshot, report, doctor, prune-images), `sideeye doctor`
(doctor.py: every requirement checked for real, one line each) and the demo
(`python -m pytest_sideeye.cli.demo`, what `bash scripts/run demo` runs).

The last stage: it may use every other one; nothing imports it.
"""
