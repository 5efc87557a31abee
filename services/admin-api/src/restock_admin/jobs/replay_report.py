"""What ``jobs replay`` prints and how it exits: the replay result as one JSON line.

Exit 0 when every requested job was replayed, 1 when any was refused (the replayable ones still were,
and the refusals are in the output and the audit row), so a script notices a partial replay.
"""

from __future__ import annotations

import json

from restock_common.replay import ReplayResult

EXIT_REPLAYED = 0
EXIT_SOME_REFUSED = 1


def report(result: ReplayResult) -> str:
    """``{"replayed": [ids], "refused": {"id": "reason"}}``."""
    refused = {str(job_id): reason for job_id, reason in result.refused.items()}
    return json.dumps({"replayed": result.replayed, "refused": refused}, sort_keys=True)


def exit_code(result: ReplayResult) -> int:
    """The process exit code of a replay."""
    return EXIT_SOME_REFUSED if result.refused else EXIT_REPLAYED
