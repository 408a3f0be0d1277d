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

namespace local_integrationhub\privacy;

use core_privacy\local\metadata\collection;
use core_privacy\local\request\approved_contextlist;
use core_privacy\local\request\approved_userlist;
use core_privacy\local\request\contextlist;
use core_privacy\local\request\userlist;

/**
 * Privacy provider: the plugin stores no personal data itself, it sends some to the Integration Hub.
 *
 * Like other plugins that only pass data on (search_solr, fileconverter_googledrive), it declares
 * the external location and implements the request providers with nothing to export or delete.
 *
 * @package    local_integrationhub
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class provider implements
        // This plugin has no database tables; it acts as a conduit, sending data to the hub.
        \core_privacy\local\metadata\provider,
        \core_privacy\local\request\core_userlist_provider,
        \core_privacy\local\request\plugin\provider {

    /**
     * Describe the personal data sent to the hub.
     *
     * @param collection $collection The initialised collection to add items to.
     * @return collection
     */
    public static function get_metadata(collection $collection): collection {
        $collection->add_external_location_link('integrationhub', [
            'userid' => 'privacy:metadata:integrationhub:userid',
            'idnumber' => 'privacy:metadata:integrationhub:idnumber',
            'username' => 'privacy:metadata:integrationhub:username',
            'email' => 'privacy:metadata:integrationhub:email',
            'courseid' => 'privacy:metadata:integrationhub:courseid',
            'enrolment' => 'privacy:metadata:integrationhub:enrolment',
            'timecompleted' => 'privacy:metadata:integrationhub:timecompleted',
        ], 'privacy:metadata:integrationhub');
        return $collection;
    }

    /**
     * No context holds data of this plugin.
     *
     * @param int $userid The user to search.
     * @return contextlist An empty list.
     */
    public static function get_contexts_for_userid(int $userid): contextlist {
        return new contextlist();
    }

    /**
     * No user has data of this plugin in any context.
     *
     * @param userlist $userlist The userlist to fill (left empty).
     * @return void
     */
    public static function get_users_in_context(userlist $userlist) {
    }

    /**
     * Nothing is stored, so nothing is exported.
     *
     * @param approved_contextlist $contextlist The approved contexts to export information for.
     * @return void
     */
    public static function export_user_data(approved_contextlist $contextlist) {
    }

    /**
     * Nothing is stored, so nothing is deleted.
     *
     * @param \context $context The context to delete data for.
     * @return void
     */
    public static function delete_data_for_all_users_in_context(\context $context) {
    }

    /**
     * Nothing is stored, so nothing is deleted.
     *
     * @param approved_contextlist $contextlist The approved contexts and user to delete information for.
     * @return void
     */
    public static function delete_data_for_user(approved_contextlist $contextlist) {
    }

    /**
     * Nothing is stored, so nothing is deleted.
     *
     * @param approved_userlist $userlist The approved context and users to delete information for.
     * @return void
     */
    public static function delete_data_for_users(approved_userlist $userlist) {
    }
}
