<?php
// This file is part of Moodle - https://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <https://www.gnu.org/licenses/>.

/**
 * Test helper, not part of the plugin: runs the task's pure functions without a Moodle install.
 *
 * Reads a JSON object on stdin: data (the task's custom data), siteidentifier, wwwroot, user,
 * course, enrolment, completion, timestamp, secret. Prints a JSON object: id, body, signature, headers.
 * Used by integration_hub/tests/test_moodle_plugin.py to compare with Python's hmac.
 *
 * @package    local_integrationhub
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

namespace core\task {
    /**
     * Stand-in for Moodle's ad-hoc task base class.
     *
     * @package    local_integrationhub
     * @copyright  2026 Integration Hub maintainers
     * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
     */
    abstract class adhoc_task {
    }
}

namespace {
    define('MOODLE_INTERNAL', true);
    require(__DIR__ . '/../local_integrationhub/classes/task/deliver_event.php');

    use local_integrationhub\task\deliver_event;

    $input = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
    $payload = deliver_event::build_payload(
        $input['data'],
        $input['siteidentifier'],
        $input['wwwroot'],
        $input['user'],
        $input['course'] ?? null,
        $input['enrolment'] ?? null,
        $input['completion'] ?? null
    );
    $body = deliver_event::encode($payload);
    $signature = deliver_event::sign($body, (int) $input['timestamp'], $input['secret']);
    echo json_encode([
        'id' => $payload['id'],
        'body' => $body,
        'signature' => $signature,
        'headers' => deliver_event::headers($payload['id'], (int) $input['timestamp'], $signature),
    ], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
}
