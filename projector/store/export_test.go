package store

// NotificationPositionsSQL is the scan GET /notifications examines, for
// a test of how many rows it reads.
const NotificationPositionsSQL = notificationPositionsSQL
