"""Planning a job before it is submitted: the formula estimate (``estimate``) and the traced run of the
real code on the stand-in accelerator (``trace``, measured by ``memory``)."""
