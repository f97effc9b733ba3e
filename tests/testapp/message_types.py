from dispatcher.messages import MessageBase


class HelloMessage(MessageBase):
    """A templated e-mail, rendered per recipient."""

    alias = "hello"
    title = "Hello"
    template = "testapp/hello.txt"
