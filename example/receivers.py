from django.dispatch import receiver

from dispatcher.signals import dispatch_failed


@receiver(dispatch_failed)
def on_failed(sender, dispatch, **kwargs):
    print('gave up on', dispatch.address, dispatch.errors.first().text)
