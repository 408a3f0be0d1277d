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

namespace local_integrationhub\task;

/**
 * Ad-hoc task that sends one Moodle change to the Integration Hub as a signed JSON event.
 *
 * The body is built from Moodle's state when the task runs (the user, the course, the enrolment,
 * the completion), so a delayed or retried delivery sends what is true now. A 2xx answer is a
 * success; anything else throws, and Moodle's task manager runs the task again later with its
 * growing fail delay.
 *
 * @package    local_integrationhub
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class deliver_event extends \core\task\adhoc_task {

    /** @var string[] Short names of the events this task delivers. */
    public const EVENTS = [
        'user_updated',
        'user_deleted',
        'user_enrolment_created',
        'user_enrolment_updated',
        'user_enrolment_deleted',
        'course_completed',
    ];

    /** @var string[] Events whose body carries an "enrolment" object (or null). */
    public const ENROLMENT_EVENTS = [
        'user_enrolment_created',
        'user_enrolment_updated',
        'user_enrolment_deleted',
    ];

    /** @var int Seconds the whole request may take. */
    public const TIMEOUT = 10;

    /** @var int Seconds the connection may take. */
    public const CONNECT_TIMEOUT = 5;

    /**
     * Name of the task, shown to administrators.
     *
     * @return string
     */
    public function get_name() {
        return get_string('taskdeliverevent', 'local_integrationhub');
    }

    /**
     * Build the event, sign it and post it to the hub.
     *
     * @return void
     * @throws \moodle_exception when the hub cannot be reached or does not answer 2xx (the task is retried).
     */
    public function execute() {
        global $CFG;
        require_once($CFG->libdir . '/filelib.php');

        $data = (array) $this->get_custom_data();
        $eventname = (string) ($data['eventname'] ?? '');
        $userid = (int) ($data['userid'] ?? 0);
        if (!in_array($eventname, self::EVENTS, true) || $userid <= 0) {
            // Nothing a retry could fix.
            mtrace('Integration Hub: ignoring a task with unknown data.');
            return;
        }

        $config = get_config('local_integrationhub');
        if (empty($config->huburl) || empty($config->secret)) {
            mtrace("Integration Hub: not configured (no hub URL or secret), {$eventname} for user {$userid} not sent.");
            return;
        }

        $courseid = empty($data['courseid']) ? null : (int) $data['courseid'];
        $time = (int) ($data['time'] ?? 0);

        $enrolment = null;
        $completion = null;
        if ($courseid && in_array($eventname, self::ENROLMENT_EVENTS, true)) {
            $enrolment = self::load_enrolment($userid, $courseid);
        }
        if ($courseid && $eventname === 'course_completed') {
            $completion = self::load_completion($userid, $courseid, $time);
        }

        $payload = self::build_payload(
            $data,
            get_site_identifier(),
            $CFG->wwwroot,
            self::load_user($userid, $data),
            self::load_course($courseid),
            $enrolment,
            $completion
        );
        $body = self::encode($payload);
        $timestamp = time();

        $this->post((string) $config->huburl, $body, $payload['id'], $timestamp, (string) $config->secret);
    }

    /**
     * Unique id of an event: the same Moodle change always gets the same id, so the hub can tell a
     * redelivery from a new event.
     *
     * @param string $siteidentifier Moodle's site identifier (get_site_identifier()).
     * @param string $eventname Short event name.
     * @param int $userid User id.
     * @param int|null $courseid Course id, or null.
     * @param int $time Time the event was triggered.
     * @return string 40 hex characters.
     */
    public static function event_id(string $siteidentifier, string $eventname, int $userid, ?int $courseid, int $time): string {
        return sha1(implode('|', [$siteidentifier, $eventname, $userid, $courseid ?? '', $time]));
    }

    /**
     * Value of the X-Hub-Signature-256 header: HMAC-SHA256 of "<timestamp>.<body>" with the shared secret.
     *
     * @param string $body The exact bytes of the request body.
     * @param int $timestamp The value sent in X-Hub-Timestamp.
     * @param string $secret The shared secret.
     * @return string "sha256=" followed by 64 lowercase hex characters.
     */
    public static function sign(string $body, int $timestamp, string $secret): string {
        return 'sha256=' . hash_hmac('sha256', $timestamp . '.' . $body, $secret);
    }

    /**
     * Request headers of one delivery.
     *
     * @param string $eventid The event id (also in the body).
     * @param int $timestamp Unix time of sending.
     * @param string $signature Value from sign().
     * @return string[]
     */
    public static function headers(string $eventid, int $timestamp, string $signature): array {
        return [
            'Content-Type: application/json',
            'X-Hub-Event-Id: ' . $eventid,
            'X-Hub-Timestamp: ' . $timestamp,
            'X-Hub-Signature-256: ' . $signature,
        ];
    }

    /**
     * Build the event body from the task's custom data and what was read from the database.
     *
     * @param array $data Custom data: eventname, userid, courseid, time (and the user_deleted snapshot).
     * @param string $siteidentifier Moodle's site identifier.
     * @param string $wwwroot The site's address.
     * @param array $user id, idnumber, username, email.
     * @param array|null $course id, shortname, idnumber; null for user events.
     * @param array|null $enrolment status, timestart, timeend, roles; null when the user has no enrolment left.
     * @param array|null $completion timecompleted.
     * @return array
     */
    public static function build_payload(array $data, string $siteidentifier, string $wwwroot, array $user,
            ?array $course, ?array $enrolment = null, ?array $completion = null): array {
        $eventname = (string) $data['eventname'];
        $userid = (int) $data['userid'];
        $courseid = empty($data['courseid']) ? null : (int) $data['courseid'];
        $time = (int) ($data['time'] ?? 0);

        $payload = [
            'id' => self::event_id($siteidentifier, $eventname, $userid, $courseid, $time),
            'event' => $eventname,
            'time' => $time,
            'site' => $wwwroot,
            'user' => [
                'id' => $userid,
                'idnumber' => $user['idnumber'] ?? null,
                'username' => $user['username'] ?? null,
                'email' => $user['email'] ?? null,
            ],
            'course' => $course === null ? null : [
                'id' => (int) $course['id'],
                'shortname' => $course['shortname'] ?? null,
                'idnumber' => $course['idnumber'] ?? null,
            ],
        ];
        if (in_array($eventname, self::ENROLMENT_EVENTS, true)) {
            $payload['enrolment'] = $enrolment === null ? null : [
                'status' => (int) $enrolment['status'],
                'timestart' => (int) $enrolment['timestart'],
                'timeend' => (int) $enrolment['timeend'],
                'roles' => array_values(array_map('strval', $enrolment['roles'] ?? [])),
            ];
        }
        if ($eventname === 'course_completed') {
            $payload['completion'] = [
                'timecompleted' => (int) ($completion['timecompleted'] ?? $time),
            ];
        }
        return $payload;
    }

    /**
     * Encode the body as JSON (UTF-8, slashes not escaped).
     *
     * @param array $payload
     * @return string
     * @throws \JsonException when the data cannot be encoded.
     */
    public static function encode(array $payload): string {
        return json_encode($payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    }

    /**
     * The user's id, idnumber, username and email: from the user table while the user exists and is
     * not deleted, else from the snapshot kept in the task (user_deleted), else unknown (null).
     *
     * @param int $userid
     * @param array $data The task's custom data.
     * @return array
     */
    protected static function load_user(int $userid, array $data): array {
        global $DB;
        $record = $DB->get_record('user', ['id' => $userid], 'id, idnumber, username, email, deleted');
        if ($record && empty($record->deleted)) {
            return [
                'id' => (int) $record->id,
                'idnumber' => (string) $record->idnumber,
                'username' => (string) $record->username,
                'email' => (string) $record->email,
            ];
        }
        return [
            'id' => $userid,
            'idnumber' => isset($data['idnumber']) ? (string) $data['idnumber'] : null,
            'username' => isset($data['username']) ? (string) $data['username'] : null,
            'email' => isset($data['email']) ? (string) $data['email'] : null,
        ];
    }

    /**
     * The course's id, shortname and idnumber; when the course is gone only the id is known.
     *
     * @param int|null $courseid
     * @return array|null null when the event has no course.
     */
    protected static function load_course(?int $courseid): ?array {
        global $DB;
        if (!$courseid) {
            return null;
        }
        $record = $DB->get_record('course', ['id' => $courseid], 'id, shortname, idnumber');
        if (!$record) {
            return ['id' => $courseid, 'shortname' => null, 'idnumber' => null];
        }
        return [
            'id' => (int) $record->id,
            'shortname' => (string) $record->shortname,
            'idnumber' => (string) $record->idnumber,
        ];
    }

    /**
     * The user's enrolment in the course as it is now, or null when none is left.
     *
     * A user can be enrolled by several methods; an active one (enrolment active and its method
     * enabled) is preferred, else the oldest. status is 0 for active, 1 otherwise. roles are the
     * shortnames of the roles the user holds in the course context.
     *
     * @param int $userid
     * @param int $courseid
     * @return array|null
     */
    protected static function load_enrolment(int $userid, int $courseid): ?array {
        global $DB;
        $sql = "SELECT ue.id, ue.status AS uestatus, ue.timestart, ue.timeend, e.status AS estatus
                  FROM {user_enrolments} ue
                  JOIN {enrol} e ON e.id = ue.enrolid
                 WHERE ue.userid = :userid AND e.courseid = :courseid
              ORDER BY ue.id ASC";
        $records = $DB->get_records_sql($sql, ['userid' => $userid, 'courseid' => $courseid]);
        if (!$records) {
            return null;
        }
        $chosen = null;
        foreach ($records as $record) {
            if ((int) $record->uestatus === ENROL_USER_ACTIVE && (int) $record->estatus === ENROL_INSTANCE_ENABLED) {
                $chosen = $record;
                break;
            }
        }
        $active = $chosen !== null;
        if (!$active) {
            $chosen = reset($records);
        }

        $roles = [];
        $context = \context_course::instance($courseid, IGNORE_MISSING);
        if ($context) {
            foreach (get_user_roles($context, $userid, false) as $ra) {
                $roles[$ra->shortname] = $ra->shortname;
            }
        }
        ksort($roles);

        return [
            'status' => $active ? ENROL_USER_ACTIVE : ENROL_USER_SUSPENDED,
            'timestart' => (int) $chosen->timestart,
            'timeend' => (int) $chosen->timeend,
            'roles' => array_values($roles),
        ];
    }

    /**
     * When the user completed the course; the event's time when the record is no longer there.
     *
     * @param int $userid
     * @param int $courseid
     * @param int $time The event's time.
     * @return array
     */
    protected static function load_completion(int $userid, int $courseid, int $time): array {
        global $DB;
        $timecompleted = $DB->get_field('course_completions', 'timecompleted', ['userid' => $userid, 'course' => $courseid]);
        return ['timecompleted' => $timecompleted ? (int) $timecompleted : $time];
    }

    /**
     * Post the signed body to the hub.
     *
     * @param string $url The hub's address for this site.
     * @param string $body JSON body.
     * @param string $eventid Event id.
     * @param int $timestamp Unix time of sending.
     * @param string $secret Shared secret (never logged).
     * @return void
     * @throws \moodle_exception on a curl error or a non-2xx answer.
     */
    protected function post(string $url, string $body, string $eventid, int $timestamp, string $secret): void {
        $curl = new \curl();
        $curl->setHeader(self::headers($eventid, $timestamp, self::sign($body, $timestamp, $secret)));
        $curl->setopt([
            'CURLOPT_TIMEOUT' => self::TIMEOUT,
            'CURLOPT_CONNECTTIMEOUT' => self::CONNECT_TIMEOUT,
            // A redirect would turn the POST into a GET without the body: treat it as a failure.
            'CURLOPT_FOLLOWLOCATION' => 0,
            'CURLOPT_SSL_VERIFYPEER' => 1,
        ]);
        $response = $curl->post($url, $body);

        $info = $curl->get_info();
        $status = (int) ($info['http_code'] ?? 0);
        $errno = (int) $curl->get_errno();
        if ($errno || ($status === 0 && $curl->error !== '')) {
            // A curl error, or a URL refused by Moodle's cURL security settings.
            throw new \moodle_exception('deliveryfailed', 'local_integrationhub', '',
                "{$eventid} to {$url}: curl error {$errno} {$curl->error}");
        }
        if ($status < 200 || $status > 299) {
            $excerpt = \core_text::substr(trim(strip_tags((string) $response)), 0, 200);
            throw new \moodle_exception('deliveryfailed', 'local_integrationhub', '',
                "{$eventid} to {$url}: HTTP {$status}", $excerpt);
        }
        mtrace("Integration Hub: event {$eventid} delivered (HTTP {$status}).");
    }
}
