suite_up(){ :; }
