"""Whether an error means the disk is full, whichever library's writer raised it."""

import errno

# What torch's and safetensors' errors say when the disk is full (they are RuntimeErrors, not OSError ENOSPC).
_ENOSPC_TEXT = (
    "No space left on device",
    "os error 28",
    "code: 28",
    "StorageFull",
    "file write failed",
    "unexpected pos",
)


def is_enospc(err: BaseException | None) -> bool:
    """A full disk: OSError ENOSPC, or a library's write error saying so, anywhere in the chain of causes."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if not isinstance(err, OSError) and any(text in str(err) for text in _ENOSPC_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False
