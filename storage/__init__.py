"""Where texts and threads live: the content-addressed blob store (``store``, over
``blobstore``'s SQLite file or PostgreSQL table), the checkpointer and blob store of a
location (``persistence``), documents read from files (``documents``), and a cache
file written whole or not at all (``files``)."""
