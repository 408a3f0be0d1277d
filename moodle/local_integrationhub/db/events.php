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
 * Event observers of the Integration Hub local plugin.
 *
 * Every observer is external ('internal' => false): Moodle holds the event back while a database
 * transaction is open and calls the observer once it has been committed, so a task is never queued
 * for a change that is later rolled back.
 *
 * @package    local_integrationhub
 * @category   event
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$observers = [
    [
        'eventname' => '\core\event\user_updated',
        'callback'  => '\local_integrationhub\observer::user_updated',
        'internal'  => false,
    ],
    [
        'eventname' => '\core\event\user_deleted',
        'callback'  => '\local_integrationhub\observer::user_deleted',
        'internal'  => false,
    ],
    [
        'eventname' => '\core\event\user_enrolment_created',
        'callback'  => '\local_integrationhub\observer::user_enrolment_created',
        'internal'  => false,
    ],
    [
        'eventname' => '\core\event\user_enrolment_updated',
        'callback'  => '\local_integrationhub\observer::user_enrolment_updated',
        'internal'  => false,
    ],
    [
        'eventname' => '\core\event\user_enrolment_deleted',
        'callback'  => '\local_integrationhub\observer::user_enrolment_deleted',
        'internal'  => false,
    ],
    [
        'eventname' => '\core\event\course_completed',
        'callback'  => '\local_integrationhub\observer::course_completed',
        'internal'  => false,
    ],
];
