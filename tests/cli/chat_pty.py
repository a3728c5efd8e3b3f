#!/usr/bin/env python3
"""chat_pty.py PAGELLM MODEL -- drives `pagellm chat` on a pseudo-terminal, as a user
at a keyboard: Ctrl-C during a reply ends that reply and the session goes on (twice),
/reset confirms, Ctrl-C at the prompt says how to leave, Ctrl-D leaves with a newline
and exit status 0. Every wait polls for the expected text; the deadlines only guard
against a hang (nothing depends on how fast the model runs)."""
import os
import pty
import select
import sys
import time

HANG_GUARD_S = 300


class Session:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            os.environ["PAGELLM_LOG_LEVEL"] = "warn"
            os.execv(argv[0], argv)
        self.buf = b""
        self.eof = False

    def _read(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        r, _, _ = select.select([self.fd], [], [], min(left, 1.0))
        if r:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            if not data:
                self.eof = True
            self.buf += data

    def expect(self, text, after=0):
        """Waits until `text` appears at or after offset `after`; returns its end."""
        deadline = time.monotonic() + HANG_GUARD_S
        want = text.encode()
        while True:
            i = self.buf.find(want, after)
            if i >= 0:
                return i + len(want)
            if self.eof:
                raise AssertionError("EOF before %r; output:\n%r" % (text, self.buf[-2000:]))
            try:
                self._read(deadline)
            except TimeoutError:
                raise AssertionError("no %r; output:\n%r" % (text, self.buf[-2000:]))

    def wait_output(self, after, n):
        """Waits until at least n bytes follow offset `after` (a reply is streaming)."""
        deadline = time.monotonic() + HANG_GUARD_S
        while len(self.buf) - after < n:
            if self.eof:
                raise AssertionError("EOF while waiting for a reply: %r" % self.buf[-2000:])
            self._read(deadline)

    def send(self, s):
        os.write(self.fd, s.encode())

    def finish(self):
        deadline = time.monotonic() + HANG_GUARD_S
        while not self.eof:
            self._read(deadline)
        _, status = os.waitpid(self.pid, 0)
        return status


def main():
    pagellm, model = sys.argv[1], sys.argv[2]
    # a reply long enough that it is still streaming when Ctrl-C comes: the rest of a
    # 32768-token context (the opt-in lets max_model_len pass the model's 2048)
    s = Session([pagellm, "chat", "--model", model, "--threads", "1", "--ignore-eos",
                 "--max-model-len", "32768", "--allow-long-max-model-len"])
    at = s.expect("> ")
    for turn in ("hello", "again"):
        s.send(turn + "\n")
        at = s.expect(turn + "\r\n", at)       # the terminal's echo
        s.wait_output(at, 40)                  # the reply is streaming
        s.send("\x03")                         # Ctrl-C
        at = s.expect("[interrupted after ", at)
        at = s.expect("> ", at)                # the session goes on
    s.send("/reset\n")
    at = s.expect("[conversation reset]", at)
    at = s.expect("> ", at)
    s.send("\x03")                             # Ctrl-C at the prompt: nothing to stop
    at = s.expect("(/exit or Ctrl-D leaves the chat)", at)
    at = s.expect("> ", at)
    s.send("\x04")                             # Ctrl-D: end of input
    status = s.finish()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    tail = s.buf[at - 2:]
    # the prompt's line is ended, so the shell's prompt starts on a line of its own
    assert tail.endswith(b"> \r\n"), tail
    print("chat_pty: passed")


if __name__ == "__main__":
    main()
