"""What a worker hands a run, and where the run's SDK finds it: one spelling for both sides.

The worker (``worker/runner.py``, ``worker/executors/``) sets these environment variables
for the run's process and lays out its channel folder with these names; the SDK inside the
run (``Run.get_context()``, ``runyard.tracking.sinks``) reads them. Changing a name here
changes it on both sides at once. Standard library only, Python 3.9 syntax: it is imported
inside run images where nothing has been installed.
"""

# --- environment variables the worker sets for the run ------------------------------------

RUN_ID = "RUNYARD_RUN_ID"  # the run's id; also how the worker finds a run's processes
CLUSTER = "RUNYARD_CLUSTER"  # the cluster the run was queued on
EXPERIMENT = "RUNYARD_EXPERIMENT"  # the run's experiment
URL = "RUNYARD_URL"  # the API the run's own SDK calls (also read from a user's shell)
TOKEN = "RUNYARD_TOKEN"  # the run's own token: its tree, while this attempt runs
TRACKING_DIR = "RUNYARD_TRACKING_DIR"  # the channel folder (below) the worker tails
ATTEMPT = "RUNYARD_ATTEMPT"  # which attempt of the run this is (1, then 2 after a requeue)
# "1" when the attempt before this one was preempted (its checkpoints are back in place)
PREVIOUS_ATTEMPT_PREEMPTED = "RUNYARD_PREVIOUS_ATTEMPT_PREEMPTED"

# --- the channel folder (RUNYARD_TRACKING_DIR) -------------------------------------------

CHANNEL_FILE = "events.jsonl"  # the run appends event lines; the worker forwards them
STAGING_DIR = "files"  # files staged for upload, referenced by a ``file`` event line
SYNC_SOCKET = "sync.sock"  # where the worker confirms a ``sync`` line is stored

# --- the run's working folder ---------------------------------------------------------------

OUTPUTS_DIR = "outputs"  # ./outputs: stored in the run record when the run ends (as Azure)
# ./checkpoints: stored like outputs when an attempt ends; with outputs, put back in place
# before a requeued run's next attempt starts, so a training loop can resume
CHECKPOINTS_DIR = "checkpoints"
