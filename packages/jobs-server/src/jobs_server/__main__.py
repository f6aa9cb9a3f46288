from jobs_server.cli import main

main()
