/*
 * err.c — error code names and their exit codes.
 */
#include "core/err.h"

const char *crw_err_str(int err) {
    switch (err) {
    case CRW_OK: return "success";
    case CRW_ERR_CONFIG: return "configuration error";
    case CRW_ERR_PREREQ: return "database prerequisite missing";
    case CRW_ERR_CONN: return "connection error";
    case CRW_ERR_PROTOCOL: return "protocol error";
    case CRW_ERR_IO: return "I/O error";
    case CRW_ERR_SINK: return "sink error";
    case CRW_ERR_SLOT_BUSY: return "replication slot busy";
    case CRW_ERR_SLOT_LOST: return "replication slot lost";
    case CRW_ERR_INTERNAL: return "internal error";
    case CRW_ERR_STOPPED: return "stopped";
    case CRW_ERR_UNMAPPED: return "change cannot be mapped";
    case CRW_ERR_STANDBY: return "standing by";
    case CRW_ERR_AUTH: return "login refused";
    }
    return "unknown error";
}

int crw_err_exit_code(int err) {
    switch (err) {
    case CRW_OK:
    case CRW_ERR_STOPPED: return 0;
    case CRW_ERR_CONFIG: return 2;
    case CRW_ERR_PREREQ:
    case CRW_ERR_AUTH:
    case CRW_ERR_SLOT_LOST: return 3;
    default: return 1;
    }
}
