"""Type stubs for the C extension gilfree._core."""

from concurrent.futures import Future
from typing import (
    Any,
    Callable,
    Final,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    final,
)

_T = TypeVar("_T")
_R = TypeVar("_R")

GF_VERSION_MAJOR: Final[int]
GF_VERSION_MINOR: Final[int]

def usable_cpus() -> int: ...
def strerror(code: int, /) -> str: ...
def _probe_call(
    fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Optional[Mapping[str, Any]], /
) -> Tuple[bool, Any, int, int, int, int, int, int, int]: ...

def _pending_result(
    fn: Callable[..., Any],
    callback: Optional[Callable[[Any], object]],
    error_callback: Optional[Callable[[BaseException], object]],
    /,
) -> "AsyncResult[Any]": ...
def _check_workers(workers: Optional[int], /) -> Optional[int]: ...
def _check_chunksize(chunksize: Optional[int], method: str, /) -> Optional[int]: ...
def _settle_result(async_result: "AsyncResult[Any]", ok: bool, value: Any, /) -> None: ...
def _worker_main(
    memfd: int, poolfd: int, sockfd: int, pool_pidfd: int, pool_pid: int, slot: int, /
) -> None: ...

class RemoteTraceback(Exception): ...
class PoolTerminated(BaseException): ...

class WorkerDiedError(RuntimeError):
    pid: int
    exitcode: Optional[int]
    signal: Optional[int]
    signal_name: Optional[str]
    index: Optional[int]
    timeout: Optional[float]

class TaskTimeoutError(WorkerDiedError): ...

class InitializerError(RuntimeError):
    worker: int

class WorkerExitError(RuntimeError):
    worker: int

@final
class ShmBuffer:
    """Shared memory received from another process (supports the buffer protocol)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

@final
class AsyncResult(Generic[_R]):
    def get(self, timeout: Optional[float] = None) -> _R: ...
    def wait(self, timeout: Optional[float] = None) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...

@final
class MapIterator(Iterator[_R]):
    def __iter__(self) -> "MapIterator[_R]": ...
    def __next__(self) -> _R: ...
    def close(self) -> None: ...
    def _prepend(self, results: List[Any], error: Optional[BaseException], /) -> None: ...

class Pool:
    def __init__(
        self,
        workers: Optional[int] = None,
        backend: str = "threads",
        *,
        _process: Optional[Tuple[bool, float, int, Callable[..., Any], Callable[..., Any]]] = None,
        _lifecycle: Optional[Tuple[Any, ...]] = None,
        _insights: bool = False,
    ) -> None: ...
    def exit_results(self) -> List[Any]: ...
    def _wait_started(self, timeout: Optional[float], /) -> None: ...
    def _abandon(self) -> None: ...
    def _insights_raw(self) -> dict[str, Any]: ...
    @property
    def workers(self) -> int: ...
    @property
    def pids(self) -> List[int]: ...
    @property
    def backend(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def _alive_threads(self) -> int: ...
    def map(
        self,
        func: Callable[[_T], _R],
        iterable: Iterable[_T],
        chunksize: Optional[int] = None,
        _progress: Optional[Callable[[int], Any]] = None,
        _offset: int = 0,
    ) -> List[_R]: ...
    def starmap(
        self,
        func: Callable[..., _R],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
        _progress: Optional[Callable[[int], Any]] = None,
        _offset: int = 0,
    ) -> List[_R]: ...
    def imap(
        self, func: Callable[[_T], _R], iterable: Iterable[_T], chunksize: Optional[int] = None,
        _progress: Optional[Callable[[int], Any]] = None, _offset: int = 0,
    ) -> MapIterator[_R]: ...
    def imap_unordered(
        self, func: Callable[[_T], _R], iterable: Iterable[_T], chunksize: Optional[int] = None,
        _progress: Optional[Callable[[int], Any]] = None, _offset: int = 0,
    ) -> MapIterator[_R]: ...
    def apply(
        self,
        func: Callable[..., _R],
        args: Iterable[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
    ) -> _R: ...
    def apply_async(
        self,
        func: Callable[..., _R],
        args: Iterable[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
        callback: Optional[Callable[[_R], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> AsyncResult[_R]: ...
    def submit(self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> Future[_R]: ...
    def close(self) -> None: ...
    def join(self) -> None: ...
    def terminate(self) -> None: ...
