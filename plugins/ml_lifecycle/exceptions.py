"""Exceptions of the lifecycle, one class per failure kind.

Classes that derive from ``AirflowFailException`` fail the task without
retries, because retrying cannot change the outcome (a gap in the landed
offsets, a failed expectation). The others are retried by Airflow as usual.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class LifecycleError(AirflowException):
    """Base class of every error this package raises on purpose."""


class ConfigError(LifecycleError, ValueError):
    """A configuration file or a run parameter has an invalid value."""


class WindowError(LifecycleError, ValueError):
    """A run's data window cannot be resolved or is invalid."""


class LoadCheckFailed(LifecycleError, AirflowFailException):
    """The landed rows do not match the Kafka offsets: gaps, duplicates or load errors."""


class LoadCheckLagging(LifecycleError):
    """The sink has not landed every offset yet, or the newest event is too old; a retry may pass."""


class ValidationFailed(LifecycleError, AirflowFailException):
    """A Great Expectations suite found data that breaks an expectation."""


class NotEnoughData(LifecycleError, AirflowFailException):
    """The features window holds too few weeks or rows to train and evaluate a model."""


class ModelRejected(LifecycleError, AirflowFailException):
    """A candidate model did not pass the approval gate."""


class DeploymentFailed(LifecycleError):
    """An endpoint did not reach InService or did not serve the expected model."""


class DeploymentRolledBack(DeploymentFailed, AirflowFailException):
    """An endpoint update failed and SageMaker kept the previous endpoint config."""
