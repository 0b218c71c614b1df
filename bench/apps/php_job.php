<?php
// A minimal realistic PHP job for the command benchmark: read the message from stdin,
// decode it, look at it, exit 0 (qsupervisor acks) or 1.
$body = stream_get_contents(STDIN);
$message = json_decode($body, true);
if (!is_array($message) || !isset($message['kind'])) {
    fwrite(STDERR, "bad message\n");
    exit(1);
}
exit(0);
