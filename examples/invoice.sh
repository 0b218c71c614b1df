#!/bin/sh
# An example job in any language, run by the `invoices` program of conf/queues.yaml: one
# process per job, the message body on standard input, the outcome in the exit status.
# Arguments: the message id and the attempt ({message_id} {attempt} in the program's
# command). Publish {"order": 1} to see it work, {"fail": true} to see it retried and then
# dead-lettered with what it wrote to stderr.
body=$(cat)
case "$body" in
  *'"fail"'*)
    echo "invoice $1: cannot render (attempt $2): the job asked to fail" >&2
    exit 1 ;;
esac
echo "invoice $1 rendered (attempt $2): $body"
