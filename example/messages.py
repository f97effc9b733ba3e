from datetime import timedelta

from dispatcher.messages import MessageBase


class WelcomeMessage(MessageBase):
    alias = 'welcome'
    title = 'Welcome mail'
    template = 'example/welcome.txt'      # example/templates/example/welcome.txt
    html_template = None
    priority = 5
    send_retry_limit = 3                  # attempts before FAILED
    allow_user_subscription = True
    requires = 'email'                    # any e-mail messenger (smtp, smtp_bulk, postmark); None: any


class NewsletterMessage(MessageBase):
    alias = 'newsletter'
    title = 'Newsletter'                  # no template: the context's 'text' is the body
    requires = 'email'


class CommentNotice(MessageBase):
    alias = 'comment'
    title = 'New comments'
    requires = 'email'
    digest = timedelta(minutes=30)        # collected for half an hour, then one mail
    digest_template = 'example/comment_digest.txt'   # gets {{ items }} and {{ count }}
