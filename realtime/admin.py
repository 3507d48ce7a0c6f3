"""Admin pages: the log and inbox states (read-only), who is online, publish tokens and notices."""

import logging

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import inbox, notices, presence, tokens
from .models import InboxState, Message, Notice, PublishToken, Stream

logger = logging.getLogger("realtime")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Stream)
class StreamAdmin(ReadOnlyAdmin):
    list_display = ("name", "last_seq", "inbox_head", "epoch", "created_at")
    search_fields = ("name",)
    change_list_template = "admin/realtime/stream/change_list.html"

    def get_urls(self):
        online = self.admin_site.admin_view(self.online_view)
        return [path("online/", online, name="realtime_online"), *super().get_urls()]

    def online_view(self, request):
        """Who is connected now, per stream, from the presence backend."""
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        backend = presence.get_backend()
        User = get_user_model()
        try:
            counts = backend.stream_counts()
            users = User._default_manager.filter(pk__in=backend.online_users()).order_by(User.USERNAME_FIELD)
            users = [(user, backend.connections(user)) for user in users]
        except Exception as exc:
            logger.warning("realtime: presence backend unreachable", exc_info=True)
            self.message_user(
                request,
                _("The presence backend cannot be read: %(error)s") % {"error": exc},
                messages.ERROR,
            )
            counts, users = {}, []
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Online now"),
            "streams": sorted(counts.items()),
            "users": users,
            "backend": type(backend).__name__,
            "per_process": not backend.shared,
        }
        return TemplateResponse(request, "admin/realtime/online.html", context)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("stream", "seq", "type", "created_at")
    list_filter = ("type", "created_at", "stream")
    list_select_related = ("stream",)
    search_fields = ("stream__name", "type", "idempotency_key")
    date_hierarchy = "created_at"
    readonly_fields = ("stream", "seq", "type", "inbox_seq", "created_at", "idempotency_key", "envelope")


@admin.register(InboxState)
class InboxStateAdmin(ReadOnlyAdmin):
    """What each user has read, per stream: for staff answering "I never got that notice"."""

    list_display = ("user", "stream", "unread", "read_upto", "updated_at")
    list_select_related = ("user", "stream")
    search_fields = ("stream__name",)
    readonly_fields = ("user", "stream", "unread", "read_upto", "read", "archived", "updated_at")

    def get_search_fields(self, request):
        # The user model's own username field, whatever it is called.
        return (*self.search_fields, f"user__{get_user_model().USERNAME_FIELD}")

    @admin.display(description=_("unread"))
    def unread(self, state):
        stream = state.stream
        return inbox.unread_of(stream.inbox_head, stream.inbox_floor, state.read_upto, state.read)


@admin.register(PublishToken)
class PublishTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "active", "created_at", "last_used_at")
    list_filter = ("active",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("name", "streams", "active", "prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        token = None if change else tokens.issue(obj)
        super().save_model(request, obj, form, change)
        if token is not None:
            self.message_user(
                request,
                format_html(
                    _(
                        "Publish token for “{name}”: <code>{token}</code> — copy it now, it is not shown again."
                    ),
                    name=obj.name,
                    token=token,
                ),
                messages.WARNING,
            )


class NoticeForm(forms.ModelForm):
    """Requires the users or groups that a "selected" audience names."""

    class Meta:
        model = Notice
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        audience = cleaned.get("audience")
        for field, needed in (("users", Notice.Audience.USERS), ("groups", Notice.Audience.GROUPS)):
            if audience == needed and field in self.fields and not cleaned.get(field):
                self.add_error(field, _("Select at least one, or choose another audience."))
        return cleaned


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    form = NoticeForm
    list_display = ("title", "level", "audience", "created_at", "sent_at", "send_count")
    list_filter = ("level", "audience", "created_at")
    search_fields = ("title", "body")
    filter_horizontal = ("users", "groups")
    readonly_fields = ("created_by", "created_at", "sent_at", "send_count")
    actions = ["send_again"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        # Only now are the selected users and groups saved. The admin runs this
        # in a transaction; notify() stores the messages in it and pushes them
        # once it commits.
        super().save_related(request, form, formsets, change)
        if not change:
            self._send(request, [form.instance])

    @admin.action(description=_("Send again"), permissions=["change"])
    def send_again(self, request, queryset):
        self._send(request, list(queryset))

    def _send(self, request, objs):
        sent = 0
        for notice in objs:
            if notices.send(notice):
                sent += 1
            else:
                self.message_user(
                    request,
                    _("“%(title)s” was not sent: its audience is empty.") % {"title": notice.title},
                    messages.WARNING,
                )
        if sent:
            self.message_user(
                request,
                ngettext("%(count)d notice was sent.", "%(count)d notices were sent.", sent)
                % {"count": sent},
                messages.SUCCESS,
            )
