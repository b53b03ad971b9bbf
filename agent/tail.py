"""A bounded buffer that keeps the last N bytes of a stream (the tail is where errors are)."""

from __future__ import annotations


class TailBuffer:
    """Accumulates bytes, remembering only the last `cap` of them and how many were seen."""

    def __init__(self, cap: int) -> None:
        if cap <= 0:
            raise ValueError("cap must be positive")
        self.cap = cap
        self.total = 0
        self._buf = bytearray()

    def write(self, chunk: bytes) -> None:
        """Append a chunk; memory stays under twice the cap."""
        self.total += len(chunk)
        if len(chunk) >= self.cap:
            self._buf = bytearray(chunk[-self.cap :])
            return
        self._buf += chunk
        if len(self._buf) > 2 * self.cap:
            del self._buf[: len(self._buf) - self.cap]

    @property
    def dropped(self) -> int:
        """Bytes seen but no longer kept."""
        return self.total - len(self.getvalue())

    def getvalue(self) -> bytes:
        """The kept tail (at most `cap` bytes)."""
        if len(self._buf) > self.cap:
            del self._buf[: len(self._buf) - self.cap]
        return bytes(self._buf)


def truncation_note(dropped: int, kept: int) -> bytes:
    """The first line of evidence whose head was dropped, so a reader knows."""
    return (
        f"[snapshot-agent: output capped; the first {dropped} bytes were dropped, "
        f"the last {kept} bytes follow]\n"
    ).encode()
