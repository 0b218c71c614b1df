// A Node producer of qsupervisor jobs, exactly as docs/messages.md describes it: persistent
// JSON, a message id, publisher confirms and mandatory; "now" to the default exchange with
// the queue as routing key, delayed to the program's delay exchange with the delay's binary
// digits as routing key and x-qsupervisor-due-at set.
//
//   node producer.js URL QUEUE DELAY_EXCHANGE JOBS_JSON
//
// JOBS_JSON is a list of {"body": ..., "delay": seconds, "headers": {...}}; header values
// go to amqplib as they are, so {"!": "float", "value": 2.5} is a typed value, and
// {"$hex": "00ff"} becomes a Buffer (a byte array). Prints one message id per line.
'use strict';
const crypto = require('node:crypto');
const amqp = require('amqplib');

function delayKey(seconds, resolution = 0.1, levels = 29) {
  const units = seconds <= 0 ? 0 : Math.max(1, Math.ceil(Number((seconds / resolution).toFixed(6))));
  if (units > 2 ** levels - 1) throw new RangeError(`delay of ${seconds}s is too long`);
  return units.toString(2).padStart(levels, '0').split('').join('.');
}

function headerValue(value) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    if (Object.hasOwn(value, '$hex')) return Buffer.from(value.$hex, 'hex');
    if (Object.hasOwn(value, '!')) return value;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, headerValue(v)]));
  }
  return Array.isArray(value) ? value.map(headerValue) : value;
}

async function main() {
  const [url, queue, delayExchange, jobsJson] = process.argv.slice(2);
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  let returned = 0;
  channel.on('return', (message) => {
    returned += 1;
    console.error(`unroutable: ${message.fields.exchange} / ${message.fields.routingKey}`);
  });
  for (const job of JSON.parse(jobsJson)) {
    const delay = job.delay || 0;
    const nowMs = Date.now();
    const headers = { 'x-qsupervisor-attempt': 1, 'x-qsupervisor-enqueued-at': nowMs };
    if (delay > 0) headers['x-qsupervisor-due-at'] = nowMs + Math.ceil(delay * 1000);
    for (const [key, value] of Object.entries(job.headers || {})) headers[key] = headerValue(value);
    const messageId = crypto.randomBytes(16).toString('hex');
    const options = {
      contentType: 'application/json', persistent: true, messageId,
      timestamp: Math.floor(nowMs / 1000), headers, mandatory: true,
    };
    const [exchange, key] = delay > 0 ? [delayExchange, delayKey(delay)] : ['', queue];
    channel.publish(exchange, key, Buffer.from(JSON.stringify(job.body)), options);
    console.log(messageId);
  }
  await channel.waitForConfirms(); // rejects on a nack
  await connection.close();
  if (returned) process.exit(1);
}

main().catch((error) => { console.error(error); process.exit(1); });
