"""colecache-client: the thin SDK for a colecache server (httpx only; no torch, no numpy).

from colecache_client import Client, Bananas
with Client("http://localhost:8000") as client:
    study = client.create_study("nb201-c100")
    result = Bananas(study, seed=0).run(evaluate=my_training_run, budget=100, batch_size=5)
"""

__version__ = "0.1.0"

from .bananas import Bananas, SearchResult, choose, expected_improvement
from .client import AsyncClient, Client, ReferenceWarning, Study
from .csvio import read_observations_csv, write_observations_csv
from .errors import (
    APIError,
    AuthenticationError,
    BadRequest,
    ColecacheError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Timeout,
    TransportError,
    ValidationError,
)
from .types import (
    BestObservation,
    Calibration,
    EmbedItem,
    EmbedResult,
    Observation,
    ObservationsWritten,
    OnlineFigures,
    Prediction,
    PredictResult,
    ProxiesResult,
    ProxyItem,
    StudyInfo,
    StudyReport,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Bananas",
    "BestObservation",
    "Calibration",
    "Client",
    "ColecacheError",
    "Conflict",
    "EmbedItem",
    "EmbedResult",
    "NotFound",
    "Observation",
    "ObservationsWritten",
    "OnlineFigures",
    "PayloadTooLarge",
    "PredictResult",
    "Prediction",
    "ProxiesResult",
    "ProxyItem",
    "RateLimited",
    "ReferenceWarning",
    "SearchResult",
    "ServerError",
    "ServiceUnavailable",
    "Study",
    "StudyInfo",
    "StudyReport",
    "Timeout",
    "TransportError",
    "ValidationError",
    "choose",
    "expected_improvement",
    "read_observations_csv",
    "write_observations_csv",
]
