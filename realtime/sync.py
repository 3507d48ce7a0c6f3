"""Model-save pushes: declare once which models notify which stream.

::

    realtime.sync.register(
        Task,
        stream=lambda task: f"project:{task.project_id}",
        fields=["title", "status"],
    )

Saving or deleting a ``Task`` then publishes ``{"model": "app.task", "pk": ...,
"event": "created" | "updated" | "deleted", "fields": {...}}`` with type
``app.task.<event>``. The message is stored in the same transaction as the
change and pushed when it commits, so a rolled-back change notifies nobody.

``QuerySet.update()``, ``bulk_create()``, ``bulk_update()``, ``QuerySet.delete()``
of related rows by the database and raw SQL send no signals; call :func:`push`
or :func:`push_many` after them. See ``docs/model-sync.md``.
"""

from dataclasses import dataclass

from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.db.models.signals import post_delete, post_save

from .api import notify
from .exceptions import RealtimeConfigError, RealtimeError

__all__ = ["register", "unregister", "push", "push_many", "AlreadyRegistered", "NotRegistered", "EVENTS"]

EVENTS = ("created", "updated", "deleted")


class AlreadyRegistered(RealtimeError, ValueError):
    """The model is already registered; :func:`unregister` it first."""


class NotRegistered(RealtimeError, LookupError):
    """The model was never registered with :func:`register`."""


@dataclass(frozen=True)
class Registration:
    """How one model is pushed: see :func:`register`."""

    model: type
    stream: object
    fields: tuple
    events: tuple
    type: str | None
    serializer: object

    @property
    def label(self):
        return self.model._meta.label_lower

    def streams(self, obj):
        return self.stream(obj) if callable(self.stream) else self.stream

    def payload(self, obj, event, only=None):
        if self.serializer is not None:
            data = self.serializer(obj)
        else:
            data = {name: _value(obj, name) for name in self.fields if only is None or name in only}
        return {"model": self.label, "pk": obj.pk, "event": event, "fields": data}

    def message_type(self, event):
        return self.type or f"{self.label}.{event}"


_registry = {}


def register(model=None, *, stream, fields=None, events=EVENTS, type=None, serializer=None):
    """Push a message whenever an instance of ``model`` is created, updated or deleted.

    ``stream`` is a ``notify()`` target (a stream name, a user, or a list of
    them) or a callable taking the instance and returning one; a callable
    returning None skips that instance. ``fields`` names the fields whose
    values go into the payload (default: none, just the model, pk and event);
    ``serializer(obj) -> dict`` replaces them. ``events`` picks which of
    ``"created"``, ``"updated"``, ``"deleted"`` are pushed. ``type`` is the
    message type (default ``"<app_label>.<model>.<event>"``).

    A save with ``update_fields`` pushes only the registered fields it
    changed, and nothing if it changed none. Saves with ``raw=True``
    (``loaddata``) push nothing.

    Without ``model`` it returns a class decorator.
    """
    if model is None:

        def decorator(cls):
            register(cls, stream=stream, fields=fields, events=events, type=type, serializer=serializer)
            return cls

        return decorator
    registration = _validate(model, stream, fields, events, type, serializer)
    if model in _registry:
        raise AlreadyRegistered(f"{registration.label} is already registered with realtime.sync.")
    _registry[model] = registration
    uid = f"realtime.sync.{registration.label}"
    post_save.connect(_on_save, sender=model, dispatch_uid=f"{uid}.save")
    post_delete.connect(_on_delete, sender=model, dispatch_uid=f"{uid}.delete")
    return model


def unregister(model):
    """Stop pushing for ``model``."""
    registration = _registry.pop(model, None)
    if registration is None:
        raise NotRegistered(f"{model._meta.label_lower} is not registered with realtime.sync.")
    uid = f"realtime.sync.{registration.label}"
    post_save.disconnect(sender=model, dispatch_uid=f"{uid}.save")
    post_delete.disconnect(sender=model, dispatch_uid=f"{uid}.delete")


def push(obj, event="updated"):
    """Publish ``event`` for ``obj`` as its registration describes, whatever ``events`` says.

    For changes no signal reports (``QuerySet.update()``, ``bulk_create()``,
    raw SQL). Returns what ``notify()`` returned, or None if the stream
    callable returned None.
    """
    return _publish(_registration(type(obj)), obj, event)


def push_many(objs, event="updated"):
    """:func:`push` each object of a queryset or list, in one transaction; return the results."""
    with transaction.atomic():
        return [push(obj, event) for obj in objs]


def _registration(model):
    try:
        return _registry[model]
    except KeyError:
        raise NotRegistered(f"{model._meta.label_lower} is not registered with realtime.sync.") from None


def _validate(model, stream, fields, events, type_, serializer):
    from django.core.exceptions import FieldDoesNotExist
    from django.db.models import Model

    if not (isinstance(model, type) and issubclass(model, Model)):
        raise RealtimeConfigError(f"realtime.sync.register() needs a model class, got {model!r}.")
    label = model._meta.label_lower
    if stream is None:
        raise RealtimeConfigError(f"realtime.sync.register({label}): give stream= (a name or a callable).")
    if isinstance(fields, str):
        raise RealtimeConfigError(
            f"realtime.sync.register({label}): fields must be a list of names, not a string."
        )
    fields = tuple(fields or ())
    for name in fields:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            raise RealtimeConfigError(
                f"realtime.sync.register({label}): {model.__name__} has no field {name!r}."
            ) from None
        if not field.concrete or field.many_to_many:
            raise RealtimeConfigError(
                f"realtime.sync.register({label}): {name!r} is not a concrete field; use serializer= "
                "for related data."
            )
    if isinstance(events, str):
        events = (events,)
    events = tuple(events)
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise RealtimeConfigError(
            f"realtime.sync.register({label}): events must be a non-empty subset of {EVENTS}, got {events!r}."
        )
    if serializer is not None and not callable(serializer):
        raise RealtimeConfigError(f"realtime.sync.register({label}): serializer must be callable.")
    if type_ is not None:
        from .envelope import validate_type

        validate_type(type_)
    return Registration(model, stream, fields, events, type_, serializer)


def _value(obj, name):
    field = obj._meta.get_field(name)
    value = field.value_from_object(obj)
    if isinstance(value, FieldFile):
        return value.name or None
    return value


def _publish(registration, obj, event, only=None):
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, got {event!r}.")
    target = registration.streams(obj)
    if target is None:
        return None
    return notify(target, registration.message_type(event), registration.payload(obj, event, only))


def _on_save(sender, instance, created, raw=False, update_fields=None, **kwargs):
    registration = _registry.get(sender)
    event = "created" if created else "updated"
    if registration is None or raw or event not in registration.events:
        return
    only = None
    if update_fields is not None and not created and registration.fields:
        names = {
            field.name
            for field in (instance._meta.get_field(name) for name in registration.fields)
            if field.name in update_fields or field.attname in update_fields
        }
        if not names:
            return
        only = names
    _publish(registration, instance, event, only)


def _on_delete(sender, instance, **kwargs):
    registration = _registry.get(sender)
    if registration is not None and "deleted" in registration.events:
        _publish(registration, instance, "deleted")
