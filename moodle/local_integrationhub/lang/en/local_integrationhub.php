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
 * English strings of the Integration Hub local plugin.
 *
 * @package    local_integrationhub
 * @category   string
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

$string['deliveryfailed'] = 'Delivery to the Integration Hub failed: {$a}';
$string['huburl'] = 'Hub URL';
$string['huburl_desc'] = 'The address the hub gives this site for Moodle events, for example https://hub.example.org/hooks/moodle/my-site/. Leave it empty to send nothing.';
$string['pluginname'] = 'Integration Hub';
$string['privacy:metadata:integrationhub'] = 'Changes to users, enrolments and course completions are sent to the Integration Hub, which keeps Moodle in step with the source system. Until it is delivered, a pending event waits in Moodle\'s ad-hoc task queue.';
$string['privacy:metadata:integrationhub:courseid'] = 'The id, short name and ID number of the course an enrolment or completion is in.';
$string['privacy:metadata:integrationhub:email'] = 'The user\'s email address.';
$string['privacy:metadata:integrationhub:enrolment'] = 'The status, start, end and roles of the user\'s enrolment in the course.';
$string['privacy:metadata:integrationhub:idnumber'] = 'The user\'s ID number.';
$string['privacy:metadata:integrationhub:timecompleted'] = 'When the user completed the course.';
$string['privacy:metadata:integrationhub:userid'] = 'The user\'s id in Moodle.';
$string['privacy:metadata:integrationhub:username'] = 'The user\'s username.';
$string['secret'] = 'Shared secret';
$string['secret_desc'] = 'The Moodle hook secret the hub shows once, when it is made on this site\'s page in the hub. Every event is signed with it (X-Hub-Signature-256). Leave it empty to send nothing.';
$string['taskdeliverevent'] = 'Send a Moodle change to the Integration Hub';
