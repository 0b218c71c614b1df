<?php
// Job classes of the yii2-queue stand-in, shared by the producer (push.php) and the
// `queue/exec` stand-in (yii), as a Yii application autoloads them in both places.
// A job is serialized with PHP's serialize(), as yii2-queue's default PhpSerializer does.

namespace app\jobs;

interface JobInterface
{
    public function execute($queue);
}

// Appends one JSON line per run to $E2E_LEDGER; may sleep, fail, or start a child.
class LedgerJob implements JobInterface
{
    public $tag = '';
    public $sleep = 0;
    public $fail = false;  // throw, as a failing job does
    public $spawn = false;  // leave a background `sleep` in the job's process group
    public $attempts = 10;  // Yii's own limit: canRetry() says no from this attempt on

    public function execute($queue)
    {
        $child = null;
        if ($this->spawn) {
            $child = (int) shell_exec('sleep 120 > /dev/null 2>&1 & echo $!');
        }
        if ($this->sleep) {
            file_put_contents(getenv('E2E_LEDGER') . '.started', json_encode([
                'id' => $queue->id, 'pid' => getmypid(), 'child' => $child,
            ]) . "\n", FILE_APPEND | LOCK_EX);
            sleep($this->sleep);
        }
        file_put_contents(getenv('E2E_LEDGER'), json_encode([
            'id' => $queue->id, 'tag' => $this->tag, 'attempt' => $queue->attempt,
            'ttr' => $queue->ttr, 'pid' => getmypid(), 'child' => $child,
            'worker' => $queue->workerPid, 't' => microtime(true), 'failed' => $this->fail,
        ]) . "\n", FILE_APPEND | LOCK_EX);
        if ($this->fail) {
            throw new \RuntimeException("job {$this->tag} failed on purpose");
        }
    }

    public function canRetry($attempt, $error)
    {
        return $attempt < $this->attempts;
    }
}
