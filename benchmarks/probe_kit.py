"""What a probe surface module gives probe_inputs.py, so each surface can live in its own file.

A surface module defines SURFACES = {"name": (cases, run)}:
  cases() -> list of dicts with at least "name" and "expect" ("error": one clear sentence is due;
             "plan": the input is fine and must be accepted)
  run(p, work) -> a short detail string when the input was accepted; raises one of Phoenix's refusal
             types (an InputError or subclass, ModelFileError, ...) with the sentence the user would see;
             raises Defect for a defect no refusal/acceptance shows (a file changed that should not have,
             a process or folder left behind, a bound not held, a leaked thread). Any other exception is
             counted as a traceback.
Each surface runs in a child process with PHOENIX_CONFIG_DIR and PHOENIX_DATA_DIR set inside `work` (a fresh
temporary folder) and each probe on a thread with a timeout, so a hang or a crash is seen and counted.
"""


class Defect(Exception):
    """Something went wrong that neither a refusal nor an acceptance shows (data loss, a leftover, a bound)."""
