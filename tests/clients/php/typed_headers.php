<?php
// A PHP producer of qsupervisor jobs with typed headers: every AMQPTable type php-amqplib
// can write, plus a plain PHP float (which php-amqplib sends as a string). Publishes one job
// now, exactly as docs/messages.md's snippet does, and prints its message id.
//
//   php typed_headers.php QUEUE '{"job": 1}'
require_once getenv('PHP_AMQPLIB_AUTOLOAD') ?: '/usr/share/php/PhpAmqpLib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPArray;
use PhpAmqpLib\Wire\AMQPDecimal;
use PhpAmqpLib\Wire\AMQPTable;

[, $queue, $body] = $argv;
$nowMs = (int) floor(microtime(true) * 1000);
$headers = new AMQPTable(['x-qsupervisor-attempt' => 1, 'x-qsupervisor-enqueued-at' => $nowMs]);
$headers->set('byte', -5, AMQPTable::T_INT_SHORTSHORT);
$headers->set('ubyte', 250, AMQPTable::T_INT_SHORTSHORT_U);
$headers->set('short', -1000, AMQPTable::T_INT_SHORT);
$headers->set('ushort', 65535, AMQPTable::T_INT_SHORT_U);
$headers->set('long', -100000, AMQPTable::T_INT_LONG);
$headers->set('ulong', 4000000000, AMQPTable::T_INT_LONG_U);
$headers->set('longlong', -1099511627776, AMQPTable::T_INT_LONGLONG);
$headers->set('decimal', new AMQPDecimal(1990, 2), AMQPTable::T_DECIMAL);
$headers->set('timestamp', 1700000000, AMQPTable::T_TIMESTAMP);
$headers->set('bool', true, AMQPTable::T_BOOL);
$headers->set('string', 'héllo', AMQPTable::T_STRING_LONG);
$headers->set('bytes', "\x00\xff", AMQPTable::T_BYTES);
$headers->set('void', null, AMQPTable::T_VOID);
$headers->set('array', new AMQPArray([1, 'two', 2.5]), AMQPTable::T_ARRAY);
$headers->set('table', new AMQPTable(['price' => 2.5, 'n' => 7]), AMQPTable::T_TABLE);
$headers->set('price', 2.5);  // a plain float: php-amqplib 3.5 writes the string "2.5"

$message = new AMQPMessage($body, [
    'content_type' => 'application/json',
    'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
    'message_id' => bin2hex(random_bytes(16)),
    'timestamp' => time(),
    'application_headers' => $headers,
]);
$connection = new AMQPStreamConnection('127.0.0.1', 5672, 'guest', 'guest');
$channel = $connection->channel();
$channel->confirm_select();
$channel->set_nack_handler(function (AMQPMessage $m) {
    throw new RuntimeException('the broker refused the message');
});
$channel->set_return_listener(function ($code, $text, $exchange, $key, AMQPMessage $m) {
    throw new RuntimeException("unroutable: $text ($exchange / $key)");
});
$channel->basic_publish($message, '', $queue, true);
$channel->wait_for_pending_acks_returns(5.0);
$channel->close();
$connection->close();
echo $message->get('message_id'), "\n";
