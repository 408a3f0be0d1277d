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

namespace local_integrationhub;

use core\event\base;
use local_integrationhub\task\deliver_event;

/**
 * Event observers: each one only queues an ad-hoc task that delivers the change to the hub.
 *
 * No HTTP is done here, so the user's own request is never slowed down or broken by the hub.
 *
 * @package    local_integrationhub
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class observer {

    /**
     * Whether the hub URL and the shared secret are both set.
     *
     * @return bool
     */
    public static function is_configured(): bool {
        $config = get_config('local_integrationhub');
        return !empty($config->huburl) && !empty($config->secret);
    }

    /**
     * A user's profile was updated.
     *
     * @param \core\event\user_updated $event
     * @return void
     */
    public static function user_updated(\core\event\user_updated $event): void {
        self::queue('user_updated', (int) $event->objectid, null, $event);
    }

    /**
     * A user was deleted. The user row is kept by Moodle but marked deleted and its username, email
     * and idnumber are overwritten, so the values the hub matches on are taken from the event now.
     *
     * @param \core\event\user_deleted $event
     * @return void
     */
    public static function user_deleted(\core\event\user_deleted $event): void {
        $other = is_array($event->other) ? $event->other : [];
        $snapshot = null;
        try {
            $snapshot = $event->get_record_snapshot('user', $event->objectid);
        } catch (\Throwable $e) {
            $snapshot = null;
        }
        $extra = [];
        foreach (['idnumber', 'username', 'email'] as $field) {
            if (isset($other[$field])) {
                $extra[$field] = (string) $other[$field];
            } else if ($snapshot && isset($snapshot->$field)) {
                $extra[$field] = (string) $snapshot->$field;
            } else {
                $extra[$field] = null;
            }
        }
        self::queue('user_deleted', (int) $event->objectid, null, $event, $extra);
    }

    /**
     * A user was enrolled in a course.
     *
     * @param \core\event\user_enrolment_created $event
     * @return void
     */
    public static function user_enrolment_created(\core\event\user_enrolment_created $event): void {
        self::queue('user_enrolment_created', (int) $event->relateduserid, (int) $event->courseid, $event);
    }

    /**
     * A user's enrolment in a course was changed (status, start or end).
     *
     * @param \core\event\user_enrolment_updated $event
     * @return void
     */
    public static function user_enrolment_updated(\core\event\user_enrolment_updated $event): void {
        self::queue('user_enrolment_updated', (int) $event->relateduserid, (int) $event->courseid, $event);
    }

    /**
     * A user was unenrolled from a course.
     *
     * @param \core\event\user_enrolment_deleted $event
     * @return void
     */
    public static function user_enrolment_deleted(\core\event\user_enrolment_deleted $event): void {
        self::queue('user_enrolment_deleted', (int) $event->relateduserid, (int) $event->courseid, $event);
    }

    /**
     * A user completed a course.
     *
     * @param \core\event\course_completed $event
     * @return void
     */
    public static function course_completed(\core\event\course_completed $event): void {
        self::queue('course_completed', (int) $event->relateduserid, (int) $event->courseid, $event);
    }

    /**
     * Queue one delivery task, unless the same delivery is already queued.
     *
     * The task is not given a user to run as (set_userid), because Moodle refuses to queue a task
     * for a user who is deleted or suspended, and deleted users are exactly what user_deleted is about.
     *
     * @param string $eventname Short event name sent to the hub.
     * @param int $userid The user the event is about.
     * @param int|null $courseid The course, or null for user events.
     * @param base $event The event, for its time.
     * @param array $extra Extra custom data (the user snapshot of user_deleted).
     * @return void
     */
    protected static function queue(string $eventname, int $userid, ?int $courseid, base $event, array $extra = []): void {
        if (!self::is_configured() || $userid <= 0) {
            return;
        }
        $data = [
            'eventname' => $eventname,
            'userid' => $userid,
            'courseid' => $courseid ?: null,
            'time' => (int) $event->timecreated,
        ] + $extra;

        $task = new deliver_event();
        $task->set_custom_data($data);
        // Same class, component and custom data already queued: do not queue it twice.
        \core\task\manager::queue_adhoc_task($task, true);
    }
}
