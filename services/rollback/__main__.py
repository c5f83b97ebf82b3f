from services.rollback.app import main

main()
