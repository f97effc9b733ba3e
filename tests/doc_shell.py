"""A ``manage.py shell`` session that the doc test feeds code blocks to, one at a time.

Started as ``python manage.py shell -c "from tests.doc_shell import serve; serve()"``,
so it is a Django shell of the repository's own site, with the environment
``make run`` has. Every block runs in one namespace (as typed into one shell,
one after the other). Requests and answers are JSON lines on stdin and on the
original stdout (prefixed with ``ANSWER``, as the shell prints lines of its own
there); what a block prints is captured and sent back with its answer.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback

ANSWER = "@@doc-shell-answer "


def serve() -> None:
    answers = sys.stdout
    namespace: dict = {"__name__": "__main__"}
    for line in sys.stdin:
        request = json.loads(line)
        printed = io.StringIO()
        answer: dict = {"ok": True}
        try:
            code = compile(request["code"], request["name"], "exec")
            with contextlib.redirect_stdout(printed):
                exec(code, namespace)
        except BaseException:  # a SystemExit of the block is its failure too
            answer = {"ok": False, "error": traceback.format_exc()}
        answer["printed"] = printed.getvalue()
        answers.write(ANSWER + json.dumps(answer) + "\n")
        answers.flush()
