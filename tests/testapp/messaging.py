"""The exchange filters of docs/inbox.md, as a site would write them."""

from dispatcher.inbox.models import Block

from .models import Follow


def only_mutual_followers(sender, recipient, recipients):
    """Users write only to people who follow them and whom they follow."""
    if sender is None:
        return "sign in to write"
    mutual = (Follow.objects.filter(follower=sender, followed=recipient).exists()
              and Follow.objects.filter(follower=recipient, followed=sender).exists())
    return None if mutual else "you can only write to people who follow you back"


def not_to_users_you_blocked(sender, recipient, recipients):
    """Blocks already stop the blocked user; this stops the one who blocked, too."""
    if sender is not None and Block.objects.filter(blocker=sender, blocked=recipient).exists():
        return "you blocked this user"
    return None
