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
 * Settings of the Integration Hub local plugin.
 *
 * Site administration > Plugins > Local plugins > Integration Hub.
 *
 * @package    local_integrationhub
 * @copyright  2026 Integration Hub maintainers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

if ($hassiteconfig) {
    $settings = new admin_settingpage('local_integrationhub', new lang_string('pluginname', 'local_integrationhub'));
    $ADMIN->add('localplugins', $settings);

    if ($ADMIN->fulltree) {
        $settings->add(new admin_setting_configtext(
            'local_integrationhub/huburl',
            new lang_string('huburl', 'local_integrationhub'),
            new lang_string('huburl_desc', 'local_integrationhub'),
            '',
            PARAM_URL,
            60
        ));
        $settings->add(new admin_setting_configpasswordunmask(
            'local_integrationhub/secret',
            new lang_string('secret', 'local_integrationhub'),
            new lang_string('secret_desc', 'local_integrationhub'),
            ''
        ));
    }
}
