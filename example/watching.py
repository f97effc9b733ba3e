def may_watch_profile(recipient, profile):       # a user, or a raw address the site subscribed
    if isinstance(recipient, str):
        return True
    # profile is None for "every profile" (each event is then checked with its object);
    # of single profiles, those nobody owns and the user's own
    return recipient.is_active and (profile is None or profile.user_id in (None, recipient.pk))
