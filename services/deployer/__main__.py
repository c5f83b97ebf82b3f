from services.deployer.app import main

main()
