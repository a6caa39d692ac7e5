/* Every C test, with its timeout in seconds (multiplied at run time by
 * $GF_TEST_TIMEOUT_MULTIPLIER).  XX(name, timeout_s); the function is
 * TEST_IMPL(name) in one of the test-*.c files. */
#ifndef GILFREE_TESTS_TEST_LIST_H
#define GILFREE_TESTS_TEST_LIST_H

#define GFT_TEST_LIST(XX)                   \
    XX(error_table, 10)                     \
    XX(alloc_replace, 10)                   \
    XX(clock_monotonic, 10)                 \
    XX(usable_cpus, 10)                     \
    XX(cgroup_parse, 10)                    \
    XX(ec_timeout, 10)                      \
    XX(ec_notify_no_syscall, 10)            \
    XX(ec_wake_one_and_all, 20)             \
    XX(ec_eintr, 20)                        \
    XX(ec_stress_pingpong, 120)             \
    XX(ec_stress_semaphore, 120)            \
    XX(queue_capacity_validation, 10)       \
    XX(queue_single_thread, 10)             \
    XX(queue_close_semantics, 10)           \
    XX(queue_timeouts, 10)                  \
    XX(queue_blocking_handoff, 20)          \
    XX(queue_close_wakes_all, 20)           \
    XX(queue_eintr, 20)                     \
    XX(queue_mpmc_stress, 180)              \
    XX(queue_shared_fork, 120)              \
    XX(shm_create_map, 10)                  \
    XX(shm_cloexec_and_seals, 10)           \
    XX(shm_validation, 10)                  \
    XX(shm_name_in_maps, 10)                \
    XX(shm_private, 10)                     \
    XX(shm_populate, 10)                    \
    XX(shm_flag_validation, 10)             \
    XX(ring_layout_validation, 10)          \
    XX(ring_single_thread, 10)              \
    XX(ring_model, 60)                      \
    XX(ring_close_semantics, 10)            \
    XX(ring_blocking, 20)                   \
    XX(ring_eintr, 20)                      \
    XX(ring_stress_threads, 120)            \
    XX(ring_cross_process, 120)             \
    XX(ring_corruption_cases, 10)           \
    XX(ring_corruption_random, 60)          \
    XX(ring_producer_killed, 60)            \
    XX(msg_parse_roundtrip, 10)             \
    XX(msg_parse_rejects, 10)               \
    XX(msg_parse_ext_and_flags, 10)         \
    XX(msg_parse_setup_and_life, 10)        \
    XX(msg_fd_validation, 10)               \
    XX(msg_fd_pass_one, 10)                 \
    XX(msg_fd_pass_many, 10)                \
    XX(msg_fd_timeouts, 10)                 \
    XX(msg_fd_eintr, 20)                    \
    XX(msg_fd_peer_gone, 10)                \
    XX(msg_fd_protocol_errors, 10)          \
    XX(msg_fd_fork, 20)                     \
    XX(proc_exit_describe, 10)              \
    XX(proc_child_exit, 20)                 \
    XX(proc_noreap_and_validation, 20)      \
    XX(proc_wait_eintr, 20)                 \
    XX(proc_nonchild_status, 20)            \
    XX(sup_callbacks, 20)                   \
    XX(sup_unwatch, 20)                     \
    XX(sup_deadline, 20)                    \
    XX(sup_callback_rules, 20)              \
    XX(sup_free_no_leak, 30)                \
    XX(sup_nonchild, 20)                    \
    XX(sup_fork_child, 20)                  \
    XX(watch_parent_pool_killed, 30)        \
    XX(watch_parent_server_killed, 20)      \
    XX(watch_parent_already_gone, 20)       \
    XX(chunker_validation, 10)              \
    XX(chunker_fixed_sequential, 10)        \
    XX(chunker_concurrent_exactly_once, 120) \
    XX(chunker_adaptive_shape, 10)          \
    XX(chunker_cancel, 10)                  \
    XX(chunker_suggest_bounds, 10)          \
    XX(pool_validation, 20)                 \
    XX(pool_runs_every_task, 120)           \
    XX(pool_hooks_names_masks, 60)          \
    XX(pool_name_truncation, 20)            \
    XX(pool_worker_try_take, 20)            \
    XX(pool_close_drains_queue, 20)         \
    XX(pool_drain_cancels, 20)              \
    XX(pool_join_timeout, 30)               \
    XX(pool_submit_full, 20)                \
    XX(pool_create_failure, 20)             \
    XX(pool_fork_child, 30)                 \
    XX(pool_signals_reach_caller, 30)       \
    XX(pool_stress, 180)

#endif /* GILFREE_TESTS_TEST_LIST_H */
