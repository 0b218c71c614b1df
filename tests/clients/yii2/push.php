<?php
// Pushes jobs exactly as yii2-queue's AMQP driver (yii\queue\amqp_interop\Queue with
// enqueue/amqp-lib) does, with php-amqplib from Debian:
// - setupBroker(): the queue durable with {x-max-priority: 10}, a durable direct exchange,
//   and the queue bound to it with an empty routing key;
// - pushMessage(): the serialized job to that exchange, persistent, message_id
//   uniqid('', true), timestamp, headers yii-attempt 1 and yii-ttr; yii-priority and the
//   AMQP priority for a priority; for a delay, yii-delay and enqueue's
//   RabbitMqDlxDelayStrategy: a durable queue enqueue.<exchange>.<ms>.x.delay with that
//   TTL whose dead letters go back to the exchange.
// Usage: php push.php URL QUEUE EXCHANGE JOBS_JSON; prints one JSON line per job pushed,
// {"id", "tag", "pushed_at"}. JOBS_JSON is a list of {tag, delay, priority, ttr, job}.

require '/usr/share/php/PhpAmqpLib/autoload.php';
require __DIR__ . '/jobs.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPTable;

[, $url, $queueName, $exchangeName, $jobsJson] = $argv;
$parts = parse_url($url);
$vhost = isset($parts['path']) && strlen($parts['path']) > 1 ? urldecode(substr($parts['path'], 1)) : '/';
$connection = new AMQPStreamConnection($parts['host'], $parts['port'] ?? 5672,
    urldecode($parts['user']), urldecode($parts['pass']), $vhost);
$channel = $connection->channel();
$channel->confirm_select();

$channel->queue_declare($queueName, false, true, false, false, false,
    new AMQPTable(['x-max-priority' => 10]));
$channel->exchange_declare($exchangeName, 'direct', false, true, false);
$channel->queue_bind($queueName, $exchangeName, '');

foreach (json_decode($jobsJson, true) as $spec) {
    $job = new app\jobs\LedgerJob();
    foreach ($spec['job'] ?? [] as $key => $value) {
        $job->$key = $value;
    }
    $job->tag = $spec['tag'];
    $ttr = $spec['ttr'] ?? 300;
    $delay = $spec['delay'] ?? 0;
    $priority = $spec['priority'] ?? null;
    $headers = ['yii-attempt' => 1, 'yii-ttr' => $ttr];
    $properties = [
        'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
        'message_id' => uniqid('', true),
        'timestamp' => time(),
    ];
    if ($delay) {
        $headers['yii-delay'] = $delay;
    }
    if ($priority) {
        $headers['yii-priority'] = $priority;
        $properties['priority'] = $priority;
    }
    $properties['application_headers'] = new AMQPTable($headers);
    $message = new AMQPMessage(serialize($job), $properties);
    if ($delay) {
        $ms = $delay * 1000;
        $delayQueue = "enqueue.$exchangeName.$ms.x.delay";
        $channel->queue_declare($delayQueue, false, true, false, false, false, new AMQPTable([
            'x-message-ttl' => $ms,
            'x-dead-letter-exchange' => $exchangeName,
            'x-dead-letter-routing-key' => '',
        ]));
        $channel->basic_publish($message, '', $delayQueue, true);
    } else {
        $channel->basic_publish($message, $exchangeName, '', true);
    }
    $channel->wait_for_pending_acks_returns(10);
    echo json_encode(['id' => $properties['message_id'], 'tag' => $spec['tag'],
                      'pushed_at' => microtime(true)]), "\n";
}
$channel->close();
$connection->close();
