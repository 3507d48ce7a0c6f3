"""Read-only admin pages for the durable log."""

from django.contrib import admin

from .models import Message, Stream


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Stream)
class StreamAdmin(ReadOnlyAdmin):
    list_display = ("name", "last_seq", "epoch", "created_at")
    search_fields = ("name",)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("stream", "seq", "type", "created_at")
    list_filter = ("stream", "type", "created_at")
    list_select_related = ("stream",)
    search_fields = ("type", "idempotency_key")
