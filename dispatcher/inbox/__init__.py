"""User-to-user messages: the postman API, the directmessages Inbox, a JSON API."""
