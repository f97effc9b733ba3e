import logging

from messengers.base import MessengerBase

logger = logging.getLogger(__name__)


class MyMessenger(MessengerBase):
    alias = 'mymessenger'            # registry key and queue name (dispatch.mymessenger)
    title = 'Super messenger'        # shown in the UI
    allow_user_subscription = False

    @classmethod
    def get_address(cls, recipient):
        if hasattr(recipient, 'username'):
            return f'{recipient.username}--address'
        return recipient

    def before_send(self):           # connect, once per batch
        pass

    def after_send(self):            # disconnect; always called
        pass

    def send(self, message_cls, message_model, dispatch_models):
        for dispatch in dispatch_models:
            # dispatch is an Envelope (messengers/base.py), not a database row:
            # dispatch.address, dispatch.rendered.subject / .text / .html
            logger.info('mymessenger: %r to %s', dispatch.rendered.text, dispatch.address)
            self.mark_sent(dispatch)  # or self.mark_error(dispatch, 'why', retry_after=60)
                                      # or self.mark_failed(dispatch, 'why')
