from services.dr_checker.app import main

main()
