"""OSS (service ordering) port and its TMF641 HTTP adapter."""

from adapters.oss.port import (
    Barring,
    LineState,
    OssClient,
    OssNotFound,
    OssRejected,
    OssUnavailable,
    ServiceOrderRef,
)

__all__ = ["Barring", "LineState", "OssClient", "OssNotFound", "OssRejected", "OssUnavailable", "ServiceOrderRef"]
