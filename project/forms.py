from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from .models import Task

LEVELS = [("info", _("Info")), ("success", _("Success")), ("warning", _("Warning")), ("error", _("Error"))]


class NoticeForm(forms.Form):
    """A notice a staff member sends to everyone or to one user."""

    audience = forms.ChoiceField(
        choices=[("everyone", _("Everyone")), ("user", _("One user"))], initial="everyone", widget=forms.RadioSelect
    )
    username = forms.CharField(max_length=150, required=False)
    level = forms.ChoiceField(choices=LEVELS, initial="info", widget=forms.RadioSelect)
    title = forms.CharField(max_length=120)
    body = forms.CharField(max_length=1000, required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self):
        data = super().clean()
        self.recipient = None
        if data.get("audience") == "user":
            username = (data.get("username") or "").strip()
            if not username:
                self.add_error("username", _("Whom should it go to?"))
            else:
                try:
                    self.recipient = get_user_model().objects.get_by_natural_key(username)
                except get_user_model().DoesNotExist:
                    self.add_error("username", _("There is no user named “%(username)s”.") % {"username": username})
        return data


class TaskForm(forms.Form):
    """A new task, or an edit of one: a rename, a move, or both. Blank fields are left as they are."""

    title = forms.CharField(max_length=200, required=False, strip=True)
    status = forms.ChoiceField(choices=Task.Status.choices, required=False)

    def __init__(self, *args, creating=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.creating = creating

    def clean(self):
        data = super().clean()
        if self.creating and not data.get("title"):
            self.add_error("title", _("Give the task a title."))
        elif not self.creating and not (data.get("title") or data.get("status")):
            raise forms.ValidationError(_("Nothing to change: give a title or a status."))
        return data

    def changes(self):
        """``{field: value}`` of what the form sets."""
        return {name: value for name, value in self.cleaned_data.items() if value}
