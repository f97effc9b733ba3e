from dispatcher.messages import MessageBase


class HelloMessage(MessageBase):
    """A templated e-mail, rendered per recipient."""

    alias = "hello"
    title = "Hello"
    template = "testapp/hello.txt"


class NewsletterMessage(MessageBase):
    """Users may subscribe to it, by e-mail only."""

    alias = "newsletter"
    title = "Newsletter"
    template = "testapp/newsletter.txt"
    supported_messengers = ("smtp",)


class SecurityAlertMessage(MessageBase):
    """Sent by the site; users may not subscribe to it themselves."""

    alias = "security_alert"
    title = "Security alert"
    allow_user_subscription = False
